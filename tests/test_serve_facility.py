"""`phonewipe serve` over a facility's PostgreSQL (`[store] url`): two real stations write
their batches to one database (a private cluster of Debian's server, tests/pgcluster.py),
and one dashboard shows both, with no --out."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator

import pytest
from pgcluster import Cluster
from serve_support import Server, get_json, request, run_station


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cluster = Cluster()
    try:
        url = cluster.new_database()
        root = tmp_path_factory.mktemp("facility")
        configs = {}
        for name, profiles in (("bench-A", ["virtual:2", "virtual-frp"]),
                               ("bench-B", ["virtual", "virtual-lying"])):
            config = root / f"{name}.toml"
            config.write_text(f'[store]\nurl = "{url}"\n\n[station]\nname = "{name}"\n')
            configs[name] = config
            run_station(root / name, profiles, "--batch", f"B-{name}", "--config", str(config))
        viewer = root / "dashboard.toml"
        viewer.write_text(f'[store]\nurl = "{url}"\n')
        yield {"root": root, "config": viewer}
    finally:
        cluster.close()


def test_one_dashboard_shows_every_station_of_the_facility(facility: dict[str, Any]) -> None:
    with Server("--config", str(facility["config"])) as s:
        stations = {c["name"]: c for c in get_json(s.url + "api/overview")["stations"]}
        assert set(stations) == {"bench-A", "bench-B"}
        assert stations["bench-A"]["finished"] == 3 and stations["bench-B"]["finished"] == 2
        assert all(c["source"] == "facility" and c["running"] == 0 for c in stations.values())
        jobs = get_json(s.url + "api/jobs")["jobs"]
        assert {(j["station"], j["result"]) for j in jobs} == {
            ("bench-A", "PASS"), ("bench-A", "NOT ERASED"), ("bench-B", "PASS"), ("bench-B", "FAIL")}
        batches = {b["batch_id"]: b for b in get_json(s.url + "api/batches")["batches"]}
        assert batches["B-bench-B"]["stations"] == ["bench-B"]
        assert batches["B-bench-A"]["state"] == "closed"
        plot = get_json(s.url + "api/throughput")
        assert {p["name"]: sum(p["counts"]) for p in plot["stations"]} == {"bench-A": 3, "bench-B": 2}
        failures = get_json(s.url + "api/failures")["failures"]
        assert {(f["result"], tuple(f["stations"])) for f in failures} == {
            ("NOT ERASED", ("bench-A",)), ("FAIL", ("bench-B",))}


def test_a_search_across_the_facility_returns_the_certificate(facility: dict[str, Any]) -> None:
    root: Path = facility["root"]
    with Server("--config", str(facility["config"]), "--trust",
                str(root / "bench-B" / "keys" / "signing-cert.pem")) as s:
        hits = get_json(s.url + "api/search?q=PWVLIE0000")["records"]
        assert [(h["station"], h["result"]) for h in hits] == [("bench-B", "FAIL")]
        [pdf] = (root / "bench-B").glob("batches/*/certificates/PWVLIE0000-*.pdf")
        status, _, body = request(s.url + f"api/certificate/facility/{hits[0]['record_id']}")
        assert status == 200 and body == pdf.read_bytes()
        verdict = get_json(s.url + f"api/verify/facility/{hits[0]['record_id']}")
        assert verdict["verdict"] == "trusted" and verdict["sha256"] == hashlib.sha256(body).hexdigest()
