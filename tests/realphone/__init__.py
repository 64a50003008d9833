"""A phone on a real kernel for the interop tier in tests/test_real_kernel.py: real page cache,
real block device, real shell, and a storage medium that can lie underneath them."""
