"""The keyed overwrite pattern: AES-256-CTR keystream addressed by byte offset.

The key is made on the host for each job and never sent to the device, so a device cannot
produce the pattern without having stored what the host streamed. Any byte range can be
regenerated independently (random access), which is what sampling needs.
"""
from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32
_BLOCK = 16


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _keystream_cipher(key: bytes, counter: int):
    nonce = (counter % (1 << 128)).to_bytes(16, "big")
    return Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()


def pattern_bytes(key: bytes, offset: int, length: int) -> bytes:
    """The pattern bytes at [offset, offset+length) of the pattern address space."""
    if length <= 0:
        return b""
    start = offset - offset % _BLOCK
    skip = offset - start
    enc = _keystream_cipher(key, start // _BLOCK)
    return enc.update(bytes(skip + length))[skip:]


class PatternStream:
    """Sequential generator of the pattern, for streaming large overwrites."""

    def __init__(self, key: bytes, offset: int = 0) -> None:
        if offset % _BLOCK:
            raise ValueError("pattern streams start on a 16-byte boundary")
        self._enc = _keystream_cipher(key, offset // _BLOCK)
        self._zeros = b""

    def next(self, length: int) -> bytes:
        if len(self._zeros) != length:
            self._zeros = bytes(length)
        return self._enc.update(self._zeros)

    def next_into(self, out: memoryview, length: int) -> None:
        """The next ``length`` bytes written into ``out`` (no copy: a direct-I/O buffer);
        ``out`` must hold ``length + 15`` bytes (the cipher's requirement)."""
        if len(self._zeros) != length:
            self._zeros = bytes(length)
        self._enc.update_into(self._zeros, out)

    def fill(self, out: memoryview) -> None:
        """The next ``len(out)`` bytes written into ``out``, which holds exactly them (a
        reused send buffer; `next_into` needs 15 bytes of room more)."""
        length = len(out)
        if len(self._zeros) != length:
            self._zeros = bytes(length)
        try:
            self._enc.update_into(self._zeros, out)
        except ValueError:  # a cryptography that wants room for a whole block more in CTR
            out[:] = self._enc.update(self._zeros)


def xor_keystream(key: bytes, offset: int, data: bytes) -> bytes:
    """data XOR pattern at offset (used by emulators to model encryption under a key)."""
    if offset % _BLOCK:
        raise ValueError("offset must be 16-byte aligned")
    return _keystream_cipher(key, offset // _BLOCK).update(data)
