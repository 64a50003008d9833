"""`phonewipe demo`: emulated handsets on loopback, erased through the real adb server,
verified, certified. Needs no phone; exits 0 when every handset ends as its profile says
an honest tool must end it (including the BLOCKED and FAILED ones)."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from phonewipe.erase import ports
from phonewipe.erase.emulation.fleet import EmulatedHandset
from phonewipe.erase.errors import PhonewipeError
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Destination, Endpoint, Media, Operator
from phonewipe.erase.plugin import Plugin, close_plugins, sandbox_plugins
from phonewipe.erase.runner import check_output_dir

DEFAULT_PROFILES = ["rooted", "unrooted", "frp-locked", "lying-1pct", "bootloader-unlocked",
                    "n900", "lumia-mass-storage", "bootloop"]  # bootloop: a dead phone over EDL
# an iPhone (erased, not verified) when the ios extra (pymobiledevice3) is installed
DEFAULT_PROFILES += ["iphone"] if importlib.util.find_spec("pymobiledevice3") else []
# handsets whose emulator needs what not every machine has (a loop device needs root): when
# one cannot start, the demo says why on one line and goes on without it
OPTIONAL_PROFILES = {"lumia-mass-storage"}
DEMO_OPERATOR = Operator(name="Demo Operator", title="Bench technician",
                         organization="phonewipe demo", location="loopback bench")
# what a real station sets in [media] (App. G): where the phones came from, what they held
DEMO_MEDIA = Media(source="phonewipe demo: emulated handsets on loopback",
                   classification="personal data (planted test data)",
                   backup="none: test data only")


def free_port() -> int:
    """A loopback port for a server started later, outside the ephemeral range
    (`phonewipe.erase.ports`)."""
    return ports.free_port()


def ensure_demo_keys(keys_dir: Path) -> Path:
    from phonewipe.certificates.keys import init_keys
    if not (keys_dir / "signing-key.pem").exists():
        init_keys(keys_dir, "phonewipe demo", "phonewipe demo signing key")
    return keys_dir


def demo_targets(plugins: dict[str, Plugin],
                 handsets: list[EmulatedHandset]) -> list[tuple[Plugin, Endpoint]]:
    """One endpoint per emulated handset, in the mode it starts in (adb or the bootloader)."""
    owner = {address: h for h in handsets for address in h.endpoints.values()}
    owner.update({h.serial: h for h in handsets})
    targets = []
    for plugin in plugins.values():
        for e in plugin.discover():
            handset = owner.get(e.address) or owner.get(e.label)
            if handset is not None and handset.storage.state.mode == e.mode:
                targets.append((plugin, e))
    if len(targets) != len(handsets):
        raise PhonewipeError(f"only {len(targets)} of {len(handsets)} emulated handsets were found",
                             "run `make demo` again; see the adb server log")
    return targets


def start_demo_handsets(names: list[str], workdir: Path, plugins: dict[str, Plugin],
                        err_console: Console) -> list[EmulatedHandset]:
    from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
    required = [n for n in names if n not in OPTIONAL_PROFILES]
    handsets = start_handsets(required, workdir, plugins)
    try:
        for name in (n for n in names if n in OPTIONAL_PROFILES):
            try:
                handsets += start_handsets([name], workdir, plugins)
            except PhonewipeError as exc:
                err_console.print(f"skipped {name}: {exc.message}", highlight=False,
                                  soft_wrap=True)
    except BaseException:
        stop_handsets(handsets)
        raise
    return handsets


def check_command(out_dir: Path) -> str:
    """The command that checks the demo's certificates, trusting the demo's own key."""
    import shlex
    certs = shlex.quote(str(out_dir / "certificates"))
    return (f"phonewipe cert verify --trust {shlex.quote(str(out_dir / 'keys' / 'signing-cert.pem'))} "
            f"{certs}/*.pdf")


def run_demo(out_dir: Path, profiles: list[str] | None, as_json: bool, console: Console,
             err_console: Console) -> int:
    from phonewipe.erase.emulation.fleet import stop_handsets
    from phonewipe.erasing import run_erase

    out_dir = check_output_dir(out_dir)
    shutil.rmtree(out_dir / "handsets", ignore_errors=True)
    keys_dir = ensure_demo_keys(out_dir / "keys")
    plugins = sandbox_plugins(out_dir)
    handsets = []
    try:
        err_console.print("starting emulated handsets on loopback, with private servers ...",
                          highlight=False)
        handsets = start_demo_handsets(profiles or DEFAULT_PROFILES, out_dir / "handsets",
                                       plugins, err_console)
        targets = demo_targets(plugins, handsets)
        settings = JobSettings(operator=DEMO_OPERATOR, destination=Destination("resale"),
                               media=DEMO_MEDIA)
        results = run_erase(targets, settings, out_dir, keys_dir, as_json)
    finally:
        stop_handsets(handsets)
        close_plugins(plugins)
    manual = _manual(out_dir, keys_dir)  # a BlackBerry attested, a dead phone destroyed (#19)
    # keyed as a record's serial is typed (str | None): every emulated handset has one
    by_serial: dict[str | None, EmulatedHandset] = {h.serial: h for h in handsets}
    # a phone that shows no serial of its own is known by its IMEI (the N900)
    by_serial.update({imei: h for h in handsets for imei in h.storage.state.imeis
                      if imei not in by_serial})
    unexpected = [(r, by_serial[r.record.device.serial]) for r in results
                  if r.record.outcome.value != by_serial[r.record.device.serial].profile.expect]
    if not as_json:  # paths and commands on lines of their own, never wrapped: copied as is
        for m in manual:
            console.print(m.line, highlight=False, soft_wrap=True, markup=False)
        console.print(f"\nsigned certificates in {out_dir / 'certificates'}:", highlight=False,
                      soft_wrap=True)
        for r in results:
            console.print(f"  {r.certificate}", highlight=False, soft_wrap=True)
        for m in manual:
            console.print(f"  {m.certificate}", highlight=False, soft_wrap=True)
        console.print("check them with:", highlight=False)
        console.print(f"  {check_command(out_dir)}", highlight=False, soft_wrap=True, markup=False)
    for r, h in unexpected:
        err_console.print(f"[red]unexpected:[/] {h.profile.name} ended {r.record.outcome.value}, "
                          f"expected {h.profile.expect}: {r.record.reason}", highlight=False)
    for m in manual:
        if not m.as_expected:
            err_console.print(f"[red]unexpected:[/] {m.record.device.serial} ended "
                              f"{m.record.outcome.value}, expected {m.expected.value}",
                              highlight=False)
    missing = [r for r in results if r.certificate is None]
    return 1 if unexpected or missing or not all(m.as_expected for m in manual) else 0


def _manual(out_dir: Path, keys_dir: Path) -> list[Any]:
    from phonewipe.certificates.sign import CertificateSigner
    from phonewipe.demo_manual import run_manual_demo
    return run_manual_demo(out_dir, CertificateSigner(keys_dir), DEMO_OPERATOR, DEMO_MEDIA)
