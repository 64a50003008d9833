"""The dashboard's web application (Starlette): a static page, a JSON API, server-sent
events for the live view, and the certificate download with its verification. Read-only:
every route answers GET (and HEAD) alone."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from phonewipe.erase.store.base import CertificateRef

from .certs import Verifier, certificate_bytes
from .security import Guard
from .source import Facility

T = TypeVar("T")


@dataclass
class ServeSettings:
    poll: float = 0.5  # seconds between looks at the logs for the live view
    heartbeat: float = 15.0  # seconds between keep-alive comments on an idle event stream


def static_dir() -> Path:
    return Path(str(resources.files("phonewipe.serve") / "static"))


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


class Dashboard:
    def __init__(self, facility: Facility, verifier: Verifier, settings: ServeSettings) -> None:
        self.facility = facility
        self.verifier = verifier
        self.settings = settings

    async def read(self, view: Callable[[], T]) -> T:
        """One view of the stores, off the event loop, one reader at a time (the live
        view's cursors are shared)."""
        def run() -> T:
            with self.facility.lock:
                return view()
        return await run_in_threadpool(run)

    async def index(self, request: Request) -> Response:
        return FileResponse(static_dir() / "index.html", media_type="text/html; charset=utf-8")

    async def overview(self, request: Request) -> Response:
        return _json(await self.read(self.facility.overview))

    async def jobs(self, request: Request) -> Response:
        return _json({"jobs": await self.read(self.facility.live_jobs)})

    async def batches(self, request: Request) -> Response:
        return _json({"batches": await self.read(self.facility.batches)})

    async def batch(self, request: Request) -> Response:
        source, batch_id = request.path_params["source"], request.path_params["batch"]
        found = await self.read(lambda: self.facility.batch(source, batch_id))
        return _json(found) if found is not None else _json({"error": "no such batch"}, 404)

    async def throughput(self, request: Request) -> Response:
        return _json(await self.read(self.facility.throughput))

    async def failures(self, request: Request) -> Response:
        return _json({"failures": await self.read(self.facility.failures)})

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "")[:200]
        return _json({"query": query, "records": await self.read(lambda: self.facility.search(query))})

    async def certificate(self, request: Request) -> Response:
        found = await self._certificate_of(request)
        if isinstance(found, Response):
            return found
        data, name, _ = found
        return Response(data, media_type="application/pdf",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    async def verification(self, request: Request) -> Response:
        found = await self._certificate_of(request)
        if isinstance(found, Response):
            return found
        data, name, ref = found
        result = await run_in_threadpool(self.verifier.verify, data, name, ref)
        return _json({"certificate": name, **result})

    async def _certificate_of(self, request: Request) -> tuple[bytes, str, CertificateRef] | Response:
        source, record_id = request.path_params["source"], request.path_params["record"]

        def find() -> tuple[bytes, str, CertificateRef] | None:
            found = self.facility.certificate(source, record_id)
            if found is None:
                return None
            got = certificate_bytes(*found)
            return (got[0], got[1], found[1]) if got else None
        found = await self.read(find)
        if found is None:
            return _json({"error": "no certificate for this record (not certified, or its file "
                                   "is gone)"}, 404)
        return found

    async def events(self, request: Request) -> Response:
        return StreamingResponse(self._stream(request), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    async def _stream(self, request: Request) -> AsyncIterator[str]:
        """Server-sent events: `change` with the jobs that changed and the new cursor each
        time a log gains rows."""
        since = await self.read(self.facility.end)
        yield "retry: 2000\n\n"
        quiet = 0.0
        while not await request.is_disconnected():
            await asyncio.sleep(self.settings.poll)
            change = await self.read(partial(self.facility.changes, since))
            if change.cursor != since:
                since, quiet = change.cursor, 0.0
                data = json.dumps({"cursor": change.cursor, "jobs": change.jobs},
                                  separators=(",", ":"))
                yield f"event: change\ndata: {data}\n\n"
            else:
                quiet += self.settings.poll
                if quiet >= self.settings.heartbeat:
                    quiet = 0.0
                    yield ": still here\n\n"


def create_app(facility: Facility, verifier: Verifier, token: str | None = None,
               loopback_only: bool = True, settings: ServeSettings | None = None) -> Guard:
    d = Dashboard(facility, verifier, settings or ServeSettings())
    routes = [
        Route("/", d.index),
        Route("/api/overview", d.overview),
        Route("/api/jobs", d.jobs),
        Route("/api/batches", d.batches),
        Route("/api/batches/{source}/{batch}", d.batch),
        Route("/api/throughput", d.throughput),
        Route("/api/failures", d.failures),
        Route("/api/search", d.search),
        Route("/api/certificate/{source}/{record}", d.certificate),
        Route("/api/verify/{source}/{record}", d.verification),
        Route("/api/events", d.events),
        Mount("/static", StaticFiles(directory=static_dir()), name="static"),
    ]
    return Guard(Starlette(routes=routes), token, loopback_only)
