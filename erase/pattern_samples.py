"""The keyed pattern (`pattern.pattern_bytes`) for thousands of scattered samples.

AES-256-CTR's keystream block i is AES(counter + i), so with zeros as plaintext the pattern
at a 16-byte aligned offset is AES-ECB over the counter blocks offset/16, offset/16 + 1, ...
Setting up a CTR context per 4 KiB sample costs more than the AES itself; here one ECB
context serves every sample of a verification, and each sample's counter blocks are made in
one integer operation: ramp(n) + c * ones(n), where ramp(n) holds 0..n-1 and ones(n) holds
1 in each of n big-endian 128-bit fields (no field overflows while c + n < 2**128).
"""
from __future__ import annotations

import functools

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .pattern import pattern_bytes

_BLOCK = 16
MAX_FAST = 64 * 1024  # longer samples amortise a CTR context anyway


@functools.lru_cache(maxsize=8)
def _fields(blocks: int) -> tuple[int, int]:
    """(ramp, ones) for ``blocks`` 128-bit big-endian fields."""
    ramp = int.from_bytes(b"".join(i.to_bytes(_BLOCK, "big") for i in range(blocks)), "big")
    ones = int.from_bytes((b"\0" * (_BLOCK - 1) + b"\1") * blocks, "big")
    return ramp, ones


class SamplePattern:
    """The pattern under one key, for one thread (an ECB context is not shared)."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()

    def at(self, offset: int, length: int) -> bytes:
        """The same bytes as ``pattern_bytes(key, offset, length)``."""
        blocks, rest = divmod(length, _BLOCK)
        counter = offset // _BLOCK
        if offset % _BLOCK or rest or not 0 < length <= MAX_FAST or counter + blocks >= 1 << 128:
            return pattern_bytes(self.key, offset, length)
        ramp, ones = _fields(blocks)
        return self._ecb.update((ramp + counter * ones).to_bytes(length, "big"))
