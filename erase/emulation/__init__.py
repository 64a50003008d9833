"""Shared pieces every emulated handset uses: profiles, storage image, planted personal
data and fault injection. Emulators of each protocol live in their plugin packages."""
