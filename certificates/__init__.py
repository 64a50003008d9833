"""Erasure certificates: PDF rendering, PAdES signing and offline verification."""
