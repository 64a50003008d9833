"""The raw data of a Firehose `program`, made ahead in a worker thread into reused buffers.

The pattern's AES runs without the GIL, so the next pieces are made while the caller's
thread sends the current one. The buffers are ``array('B')``: pyusb sends an array as it
is (bytes it first copies into a new array), and reusing a few of them spares allocating
and faulting in fresh memory for every piece.
"""
from __future__ import annotations

import threading
from array import array
from queue import SimpleQueue
from types import TracebackType
from typing import Callable, Iterator

Fill = Callable[[int, memoryview], None]  # fill(pos, out): the len(out) bytes at pos, into out
BUFFERS = 3  # one being sent, the next ones being made


class Pieces:
    """``total`` bytes in pieces of ``step`` (the last one shorter), each filled by
    ``fill`` in order of position. Use as a context manager, iterate once; a piece is
    refilled once the next one is asked for, so send it before asking."""

    def __init__(self, fill: Fill, total: int, step: int, buffers: int = BUFFERS) -> None:
        self._fill, self._total, self._step = fill, total, step
        self._free: SimpleQueue[array[int] | None] = SimpleQueue()
        self._ready: SimpleQueue[array[int] | BaseException] = SimpleQueue()
        for _ in range(min(buffers, -(-total // step))):
            self._free.put(array("B", bytes(min(step, total))))
        self._stopped = threading.Event()
        self._worker = threading.Thread(target=self._make, daemon=True, name="edl-pieces")

    def __enter__(self) -> Pieces:
        self._worker.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopped.set()
        self._free.put(None)  # wakes a worker waiting for a buffer
        self._worker.join()

    def __iter__(self) -> Iterator[array[int]]:
        for _ in range(0, self._total, self._step):
            piece = self._ready.get()
            if isinstance(piece, BaseException):
                raise piece
            yield piece
            self._free.put(piece)

    def _make(self) -> None:
        try:
            for pos in range(0, self._total, self._step):
                buf = self._free.get()
                if buf is None or self._stopped.is_set():
                    return
                n = min(self._step, self._total - pos)
                if n != len(buf):
                    buf = array("B", bytes(n))  # the last piece, shorter
                self._fill(pos, memoryview(buf))
                self._ready.put(buf)
        except BaseException as exc:  # noqa: BLE001 - raised in the sending thread instead
            self._ready.put(exc)
