"""The store backends the store tests run against, as the `backend` fixture: SQLite (a
station directory's audit.sqlite) and PostgreSQL (a private cluster, tests/pgcluster.py,
one fresh database per test)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from pgcluster import Cluster

from phonewipe.erase.store.base import Store
from phonewipe.erase.store.postgres import PostgresStore
from phonewipe.erase.store.sqlite import SqliteStore


@dataclass
class Backend:
    name: str
    cluster: Cluster | None = None
    opened: list[Store] = field(default_factory=list)

    def store(self, tmp_path: Path, station: str = "st-1", keep_pdf: bool = False) -> Store:
        made: Store
        if self.cluster is None:
            made = SqliteStore(tmp_path / "audit.sqlite", station=station, keep_pdf=keep_pdf)
        else:
            made = PostgresStore(self.cluster.new_database(), keep_pdf=keep_pdf,
                                 spool_dir=tmp_path, retry=0.2, timeout=2)
        self.opened.append(made)
        return made


def backends() -> list[str]:
    return ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    yield cluster
    cluster.close()


@pytest.fixture(name="backend")
def backend_fixture(request: pytest.FixtureRequest) -> Iterator[Backend]:
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    made = Backend(request.param, cluster)
    yield made
    for store in made.opened:
        store.close()
