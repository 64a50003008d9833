"""A phone on a real kernel for the interop tiers in tests/test_real_kernel.py (rooted) and
tests/test_real_kernel_unrooted.py (unrooted, a real ext4 on /data): real page cache, real
block device, real shell, and a storage medium that can lie underneath them."""
