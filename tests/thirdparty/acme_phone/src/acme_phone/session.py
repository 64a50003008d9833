"""One ACME handset on its service link: what phonewipe's job flow asks of a session."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from phonewipe.erase.errors import MediumUnreachable, PhonewipeError
from phonewipe.erase.model import (
    Category,
    Endpoint,
    EraseMethod,
    Expectation,
    Finding,
    Identity,
    Severity,
    Technique,
)
from phonewipe.erase.pattern import PatternStream
from phonewipe.erase.plugin import BlockReader, EraseContext, EraseReport, ProgressFn, Session

from .wire import AcmeError, AcmeLink

if TYPE_CHECKING:
    from . import AcmePlugin

CHUNK = 1 << 20
READ_BATCH = 64  # READ requests in flight at once

PATTERN = EraseMethod(
    name="acme-pattern",
    title="ACME service-link overwrite of user storage with a keyed pattern",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.PATTERN,
    description="Writes the host's keyed pseudo-random stream over the whole user area "
                "(WRITE), then reads samples back after flushing the handset's cache.")
ZEROS = EraseMethod(
    name="acme-zeros",
    title="ACME service-link overwrite of user storage with zeros",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.ZEROS,
    description="Writes zeros over the whole user area, then reads samples back after "
                "flushing the handset's cache.")


class AcmeReader:
    """phonewipe's BlockReader: sampled reads over the link, past the handset's cache."""

    def __init__(self, link: AcmeLink, size: int, block_size: int) -> None:
        self.link = link
        self.size = size
        self.block_size = block_size

    def bypass_cache(self) -> str:
        """phonewipe calls this before every verification pass: without it, a handset whose
        flash dropped writes would answer from the cache that still holds them."""
        try:
            how = self.link.call("FLUSHCACHE")
        except AcmeError as exc:
            raise MediumUnreachable(f"the ACME handset cannot flush its cache ({exc.code}), so "
                                    "a read-back could come from RAM",
                                    "update the handset's firmware") from exc
        return f"FLUSHCACHE ({' '.join(how) or 'done'}) before reading"

    def read_many(self, extents: Sequence[tuple[int, int]]) -> Iterator[bytes | None]:
        for start in range(0, len(extents), READ_BATCH):
            yield from self.link.read_many(list(extents[start:start + READ_BATCH]))


class AcmeSession(Session):
    def __init__(self, plugin: "AcmePlugin", endpoint: Endpoint, link: AcmeLink) -> None:
        self.plugin = plugin
        self.endpoint = endpoint
        self.link = link
        self.info: dict[str, Any] = {}
        self._identity: Identity | None = None

    def identify(self) -> Identity:
        self.info = self.link.call_json("IDENTIFY")
        self._identity = Identity(
            platform="acme", manufacturer=self.info.get("vendor"), model=self.info.get("model"),
            serial=self.info.get("serial"),
            imeis=(self.info["imei"],) if self.info.get("imei") else (),
            storage_type=self.info.get("storage"), capacity_bytes=self.info.get("capacity"))
        return self._identity

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def preflight(self) -> list[Finding]:
        if self._identity is None:
            self.identify()
        state = self.link.call_json("STATE")
        findings = []
        if state.get("accounts"):
            findings.append(Finding(Severity.BLOCKER, "acme-account",
                                    f"An account ({', '.join(state['accounts'])}) is signed in and "
                                    "would lock the next owner out: sign it out, then run again."))
        if state.get("owner"):
            findings.append(Finding(Severity.BLOCKER, "acme-managed",
                                    f"The handset is managed by {state['owner']}: have it "
                                    "released, then run again."))
        assert self._identity is not None
        self._identity = replace(self._identity, frp=bool(state.get("accounts")),
                                 mdm=bool(state.get("owner")))
        return findings

    def methods(self) -> list[EraseMethod]:
        return [PATTERN, ZEROS]

    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        if method not in (PATTERN, ZEROS):
            raise PhonewipeError(f"method {method.name} is not an ACME method",
                                 "choose one listed by the device")
        size = int(self.info["capacity"])
        stream = PatternStream(context.pattern_key) if method is PATTERN else None
        for offset in range(0, size, CHUNK):
            n = min(CHUNK, size - offset)
            self.link.write(offset, stream.next(n) if stream else bytes(n))
            progress(offset + n, size)
        return EraseReport(size, method.expectation, f"ACME user area, {size / 2**20:.0f} MiB",
                           {"protocol": "acme"},
                           {"IDENTIFY partition_table": int(self.info["partition_table"])})

    def reader(self) -> BlockReader | None:
        return AcmeReader(self.link, int(self.info["capacity"]), int(self.info["block"]))

    def readback(self) -> BlockReader | None:
        if not self.info:
            self.identify()
        return self.reader()

    def finish(self, method: EraseMethod, progress: ProgressFn) -> dict[str, Any]:
        self.link.call("RESET")
        return {"reset": "user area formatted (RESET)"}

    def transcript(self) -> dict[str, Any]:
        return {"protocol": "acme", "commands": dict(self.link.commands),
                "bytes_sent": self.link.sent, "bytes_received": self.link.received}

    def post_state(self) -> dict[str, Any]:
        state = self.link.call_json("STATE")
        return {"accounts": len(state.get("accounts", [])), "managed": bool(state.get("owner"))}

    def close(self) -> None:
        self.link.close()
