"""Dead phones through `phonewipe erase`: the real command (click, config, jobs,
certificates, exit codes) in this process, with the emulated EDL phones on an emulated USB
bus that the command's plugins share, as phones on a USB hub are shared. The bus lives in
this process, so the command runs here (CliRunner) rather than in a subprocess; the plugins
are the edl and fastboot ones (no adb server is started)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner, Result
from conftest import require_binary

import phonewipe.cli as cli_module
from phonewipe.certificates.keys import init_keys
from phonewipe.common import REGISTRY
from phonewipe.erase.emulation.fleet import EmulatedHandset, start_handsets, stop_handsets
from phonewipe.erase.emulation.personal import planted_markers
from phonewipe.erase.emulation.profiles import FIXTURES_DIR
from phonewipe.erase.emulation.usbbus import EmulatedUsbBus
from phonewipe.erase.plugin import PluginOptions

LOADERS = str(FIXTURES_DIR / "edl-loaders")
OPERATOR = ["--operator", "Test Operator", "--organization", "Test Org"]


class Bench:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.bus = EmulatedUsbBus()
        self.handsets: list[EmulatedHandset] = []
        self.keys = tmp / "keys"
        init_keys(self.keys, "Test Org", "test signing key")
        self.env = {"HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "home" / ".config"),
                    "CI": "", "COLUMNS": "200"}

        def plugins_of(ctx: Any) -> dict[str, Any]:
            options: PluginOptions = ctx.obj["plugin_options"]
            options.values["usb_bus"] = self.bus
            return REGISTRY.plugins(options, only=["edl", "fastboot"])
        monkeypatch.setattr(cli_module, "plugins_of", plugins_of)

    def start(self, profile: str) -> EmulatedHandset:
        plugins = REGISTRY.plugins(PluginOptions({"usb_bus": self.bus}), only=["edl", "fastboot"])
        (handset,) = start_handsets([profile], self.tmp / "handsets" / str(len(self.handsets)), plugins)
        self.handsets.append(handset)
        return handset

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(cli_module.cli, list(args), obj={}, env=self.env)

    def erase(self, target: str, *extra: str) -> tuple[Result, Path]:
        out = self.tmp / f"out{len(list(self.tmp.glob('out*')))}"
        result = self.run("erase", target, "--out", str(out), "--keys", str(self.keys), *OPERATOR,
                          "--json", *extra)
        return result, out

    def close(self) -> None:
        stop_handsets(self.handsets)


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    b = Bench(tmp_path, monkeypatch)
    try:
        yield b
    finally:
        b.close()


def entry(result: Result) -> dict[str, Any]:
    assert "Traceback" not in result.output, result.output
    (one,) = json.loads(result.stdout)
    return one


def surviving(handset: EmulatedHandset) -> list[bytes]:
    data = b"".join(p.read_bytes() for p in sorted(handset.storage.directory.glob("*.img")))
    return [m for m in planted_markers() if m in data]


def test_boot_looping_phone_is_erased_by_serial_and_certified(bench: Bench) -> None:
    phone = bench.start("bootloop")
    assert "adb" not in phone.endpoints and "fastboot" not in phone.endpoints
    listed = json.loads(bench.run("devices", "--json", "--edl-loaders", LOADERS).stdout)
    assert [(d["plugin"], d["mode"]) for d in listed] == [("edl", "edl")]  # nothing else answers
    result, out = bench.erase("5EDC0000", "--edl-loaders", LOADERS, "--edl-imei", "866196041234567",
                              "--edl-asset-tag", "DEAD-0007")
    assert result.exit_code == 0, result.output
    found = entry(result)
    assert found["outcome"] == "ERASED_VERIFIED" and found["method"] == "edl-raw-pattern"
    assert surviving(phone) == []
    shown = json.loads(bench.run("cert", "show", "--json", found["certificate"]).stdout)
    assert shown["device"]["imeis"] == ["866196041234567"]
    assert shown["asset_tag"] == "DEAD-0007"  # what `find`, reports and asset lists go by
    assert any(f["code"] == "operator-entered" for f in shown["findings"])
    verified = bench.run("cert", "verify", "--trust", str(bench.keys / "signing-cert.pem"),
                         found["certificate"])
    assert verified.exit_code == 0, verified.output
    assert bench.run("audit", "verify", str(out / "audit.sqlite")).exit_code == 0


@pytest.mark.parametrize("profile,code,outcome", [
    ("edl-ufs", 0, "ERASED_VERIFIED"),
    ("edl-gpt-corrupt", 0, "ERASED_VERIFIED"),
    ("edl-lying", 12, "FAILED"),
    ("edl-nak-loader", 11, "BLOCKED"),
])
def test_profiles_end_as_an_honest_tool_ends_them(bench: Bench, profile: str, code: int,
                                                  outcome: str) -> None:
    phone = bench.start(profile)
    assert phone.profile.expect == outcome
    result, _ = bench.erase(phone.endpoints["edl"], "--edl-loaders", LOADERS)
    assert result.exit_code == code, result.output
    assert entry(result)["outcome"] == outcome
    assert (surviving(phone) == []) == (outcome != "BLOCKED")


def test_no_programmer_is_not_erased_and_names_the_file(bench: Bench) -> None:
    phone = bench.start("edl-ufs")
    result, _ = bench.erase(phone.endpoints["edl"])
    assert result.exit_code == 11, result.output
    reason = entry(result)["reason"]
    assert "0008b0e100514985_e1d6c045e60cda7e_fhprg.bin" in reason and "--edl-loaders" in reason
    assert surviving(phone)


def test_bad_imei_is_one_line_before_any_phone_is_touched(bench: Bench) -> None:
    phone = bench.start("bootloop")
    result = bench.run("erase", phone.endpoints["edl"], "--out", str(bench.tmp / "o"), "--keys",
                       str(bench.keys), *OPERATOR, "--edl-imei", "12345")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a valid IMEI" in lines[0], result.stderr
    assert surviving(phone)


def test_unplugged_phone_fails_with_a_certificate(bench: Bench) -> None:
    phone = bench.start("bootloop")
    phone.storage.faults.faults = type(phone.storage.faults.faults)(unplug_at=0.3)
    result, _ = bench.erase(phone.endpoints["edl"], "--edl-loaders", LOADERS)
    assert result.exit_code == 12, result.output
    found = entry(result)
    assert found["outcome"] == "FAILED" and "disconnected" in found["reason"]
    assert found["certificate"]


def test_demo_erases_the_dead_phone_over_edl(tmp_path: Path) -> None:
    """`make demo`'s dead phone, alone: the demo's own sandbox finds the test programmers."""
    import subprocess
    import sys

    require_binary("adb")  # the demo starts its private adb server whatever the handsets
    result = subprocess.run([sys.executable, "-m", "phonewipe", "demo", "--out", str(tmp_path),
                             "--profile", "bootloop", "--json"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (found,) = json.loads(result.stdout)
    assert found["serial"] == "5EDC0000" and found["outcome"] == "ERASED_VERIFIED"
    assert found["method"] == "edl-raw-pattern" and Path(found["certificate"]).is_file()


def test_two_dead_phones_at_once(bench: Bench) -> None:
    """`erase --all`: both phones identified over Sahara, erased in parallel jobs on one bus."""
    phones = [bench.start("bootloop"), bench.start("edl-lying")]
    result = bench.run("erase", "--all", "--out", str(bench.tmp / "all"), "--keys", str(bench.keys),
                       *OPERATOR, "--json", "--edl-loaders", LOADERS)
    assert result.exit_code == 12, result.output  # the liar decides the code
    outcomes = {e["serial"]: e["outcome"] for e in json.loads(result.stdout)}
    assert outcomes == {"5EDC0000": "ERASED_VERIFIED", "5ED10000": "FAILED"}
    assert surviving(phones[0]) == []


def test_emulate_serves_a_dead_phone_to_another_process(tmp_path: Path) -> None:
    """`phonewipe emulate bootloop` in one process, `phonewipe devices/erase` in another:
    the phone's USB function is relayed over loopback and attached to the second process's
    emulated bus, where pyusb opens it as any phone."""
    from test_end_to_end import Bench as Emulate

    served = Emulate(tmp_path, ["bootloop"])
    try:
        listed = json.loads(served.run("devices", "--json").stdout)
        assert [d["plugin"] for d in listed] == ["edl"], listed
        out = tmp_path / "out"
        result = served.run("erase", "5EDC0000", "--out", str(out), "--keys", str(served.keys),
                            "--edl-loaders", LOADERS, "--edl-imei", "866196041234567", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        (found,) = json.loads(result.stdout)
        assert found["outcome"] == "ERASED_VERIFIED" and found["method"] == "edl-raw-pattern"
        handset = Path(served.handsets["bootloop"]["storage"])
        data = b"".join(p.read_bytes() for p in sorted(handset.glob("*.img")))
        assert not [m for m in planted_markers() if m in data]
    finally:
        served.close()
