"""The store backends the store tests run against, as the `backend` fixture: SQLite (a
station directory's audit.sqlite) and PostgreSQL (a private cluster, tests/pgcluster.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from phonewipe.erase.store.base import Store
from phonewipe.erase.store.sqlite import SqliteStore


@dataclass
class Backend:
    name: str
    opened: list[Store]

    def store(self, tmp_path: Path, station: str = "st-1", keep_pdf: bool = False) -> Store:
        made = SqliteStore(tmp_path / "audit.sqlite", station=station, keep_pdf=keep_pdf)
        self.opened.append(made)
        return made


def backends() -> list[str]:
    return ["sqlite"]


@pytest.fixture(name="backend")
def backend_fixture(request: pytest.FixtureRequest) -> object:
    made = Backend(request.param, [])
    yield made
    for store in made.opened:
        store.close()
