"""The dashboard's screenshots in docs/: `python tests/serve_screenshots.py docs`.

Three stations: bench-1 runs a live batch of emulated handsets (two slow ones, so the page
is caught while they erase) against an asset list; bench-2 and bench-3 hold a day's history
of records shaped like real ones (bench/bench_serve.py writes them). One `phonewipe serve`
shows all three in headless Chromium."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "bench")]

from bench_serve import templates, write_log  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from serve_support import ASSETS, Server, chromium, get_json, station_command, wait_for  # noqa: E402

LIVE = ["virtual:2", "virtual-frp", "virtual-lying", "virtual-cache-locked", "slow:2", "hostile-html"]


def _present(driver: Any, css: str) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, css))


def _slow_running(driver: Any) -> bool:
    return bool(driver.execute_script(
        "return [...document.querySelectorAll('#jobs tbody tr.running')]"
        ".some((tr) => tr.cells[2].textContent.startsWith('PWSLOW'))"))


def main(docs: Path) -> int:
    root = Path(tempfile.mkdtemp(prefix="phonewipe-screenshots-"))
    records, certificate = templates(root)
    write_log(root / "bench-2", 240, records, certificate)
    write_log(root / "bench-3", 160, records, certificate)
    assets = root / "assets.csv"
    assets.write_text(ASSETS)
    live = root / "bench-1"
    station = subprocess.Popen(station_command(live, LIVE, "--assets", str(assets), "--batch",
                                               "B-morning"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    docs.mkdir(parents=True, exist_ok=True)
    browsers = chromium(root / "chromium")
    driver = next(browsers)
    try:
        wait_for(lambda: (live / "audit.sqlite").is_file(), what="the live station")
        with Server("--out", str(live), "--out", str(root / "bench-2"), "--out",
                    str(root / "bench-3"), "--trust", str(live / "keys" / "signing-cert.pem")) as s:
            driver.get(s.url + "#live")
            wait_for(partial(_slow_running, driver), timeout=60, what="the slow phones erasing")
            driver.save_screenshot(str(docs / "dashboard-live.png"))
            station.wait(300)
            views = {"batch": ("#batch/bench-1/B-morning", "#batch .recon"),
                     "throughput": ("#throughput", "#plot svg rect"),
                     "failures": ("#failures", "#failures tbody tr")}
            for name, (view, css) in views.items():
                driver.get(s.url + view)
                wait_for(partial(_present, driver, css), what=name)
                driver.save_screenshot(str(docs / f"dashboard-{name}.png"))
            jobs = get_json(s.url + "api/jobs")["jobs"]
            imei = next(j["imeis"][0] for j in jobs if j["serial"] == "PWVIRT0000")
            driver.get(s.url + f"#search?q={imei}")
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".verdict.trusted"),
                     what="the verified certificate")
            driver.save_screenshot(str(docs / "dashboard-search.png"))
    finally:
        browsers.close()
        if station.poll() is None:
            station.terminate()
            station.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
