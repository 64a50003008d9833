"""Android sparse images: written to send partitions larger than max-download-size in
pieces, parsed by the emulator to apply what it receives.

Format (AOSP libsparse): a 28-byte little-endian file header, then chunks of a 12-byte
header and a body: RAW (blocks of data), FILL (a 4-byte value repeated), DONT_CARE
(skip), CRC32 (checksum of everything before it).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from phonewipe.erase.errors import ProtocolError

MAGIC = 0xED26FF3A
FILE_HEADER = struct.Struct("<IHHHHIIII")
CHUNK_HEADER = struct.Struct("<HHII")
RAW, FILL, DONT_CARE, CRC32 = 0xCAC1, 0xCAC2, 0xCAC3, 0xCAC4
OVERHEAD = FILE_HEADER.size + 3 * CHUNK_HEADER.size  # the most a `Piece` adds to its data


class SparseError(ProtocolError):
    pass


@dataclass(frozen=True)
class Piece:
    """A sparse image that writes ``length`` bytes of the partition at ``offset`` and
    leaves the rest alone: ``prefix`` + the data + ``suffix`` is what gets downloaded."""

    offset: int
    length: int
    prefix: bytes
    suffix: bytes

    @property
    def size(self) -> int:
        return len(self.prefix) + self.length + len(self.suffix)


def _chunk(kind: int, blocks: int, body_len: int) -> bytes:
    return CHUNK_HEADER.pack(kind, 0, blocks, CHUNK_HEADER.size + body_len)


def plan_pieces(image_size: int, max_download: int, block_size: int = 4096) -> list[Piece]:
    """Split an image of ``image_size`` bytes (a multiple of ``block_size``) into sparse
    pieces of at most ``max_download`` bytes each."""
    if image_size % block_size:
        raise ValueError("a sparse image covers whole blocks")
    per_piece = (max_download - OVERHEAD) // block_size * block_size
    if per_piece <= 0:
        raise ValueError(f"max-download-size {max_download} is too small for a sparse image")
    total_blocks = image_size // block_size
    pieces = []
    for offset in range(0, image_size, per_piece):
        length = min(per_piece, image_size - offset)
        before, count = offset // block_size, length // block_size
        after = total_blocks - before - count
        chunks = ([_chunk(DONT_CARE, before, 0)] if before else []) + [_chunk(RAW, count, length)]
        header = FILE_HEADER.pack(MAGIC, 1, 0, FILE_HEADER.size, CHUNK_HEADER.size, block_size,
                                  total_blocks, len(chunks) + (1 if after else 0), 0)
        pieces.append(Piece(offset, length, header + b"".join(chunks),
                            _chunk(DONT_CARE, after, 0) if after else b""))
    return pieces


def is_sparse(data: bytes | memoryview) -> bool:
    return len(data) >= 4 and struct.unpack_from("<I", data)[0] == MAGIC


@dataclass(frozen=True)
class Extent:
    """What one chunk does to the partition: write ``data`` (or ``fill`` repeated) over
    ``length`` bytes at ``offset``; neither for DONT_CARE."""

    offset: int
    length: int
    data: memoryview | None = None
    fill: bytes | None = None


def parse(image: bytes | memoryview) -> Iterator[Extent]:
    """The extents of a sparse image, checked against the header; SparseError otherwise."""
    view = memoryview(image)
    if len(view) < FILE_HEADER.size:
        raise SparseError("sparse image shorter than its header", "send a valid image")
    magic, major, _minor, file_hdr, chunk_hdr, blk, total_blocks, total_chunks, _ = \
        FILE_HEADER.unpack_from(view)
    if magic != MAGIC or major != 1 or file_hdr < FILE_HEADER.size or \
            chunk_hdr < CHUNK_HEADER.size or blk == 0 or blk % 4:
        raise SparseError("bad sparse image header", "send a valid image")
    pos, out_block = file_hdr, 0
    for _ in range(total_chunks):
        if pos + chunk_hdr > len(view):
            raise SparseError("sparse image truncated in a chunk header", "send a valid image")
        kind, _reserved, blocks, total = CHUNK_HEADER.unpack_from(view, pos)
        body = view[pos + chunk_hdr:pos + total]
        if total < chunk_hdr or len(body) != total - chunk_hdr:
            raise SparseError("sparse chunk size runs past the image", "send a valid image")
        if kind == CRC32:
            blocks = 0
        length = blocks * blk
        if out_block + blocks > total_blocks:
            raise SparseError("sparse chunks run past the image size", "send a valid image")
        if kind == RAW:
            if len(body) != length:
                raise SparseError("RAW chunk size does not match its blocks", "send a valid image")
            yield Extent(out_block * blk, length, data=body)
        elif kind == FILL:
            if len(body) != 4:
                raise SparseError("FILL chunk without a 4-byte value", "send a valid image")
            yield Extent(out_block * blk, length, fill=bytes(body))
        elif kind == DONT_CARE:
            yield Extent(out_block * blk, length)
        elif kind != CRC32:
            raise SparseError(f"unknown sparse chunk type {kind:#x}", "send a valid image")
        out_block += blocks
        pos += total
    if pos != len(view):
        raise SparseError("trailing bytes after the last sparse chunk", "send a valid image")
