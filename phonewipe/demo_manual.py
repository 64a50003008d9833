"""The demo's phones that phonewipe cannot drive (#19): a BlackBerry Z10 wiped with its own
Security Wipe and attested step by step (scripted answers, said so in the record), with a
photo of its setup screen; and a dead Galaxy S7 shredded, witnessed, with a Destruct
certificate and the destruction list. Each ends the way an honest tool must end it: ERASED,
NOT VERIFIED and DESTROYED."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from phonewipe.erase.model import Identity, Media, Operator, Outcome, Record

SCRIPTED = "scripted answers (phonewipe demo)"
EXPECTED = {"BB10DEMO0001": Outcome.ERASED_UNVERIFIED, "R58DEMODEAD1": Outcome.DESTROYED}


@dataclass(frozen=True)
class ManualResult:
    record: Record
    certificate: Path
    expected: Outcome

    @property
    def as_expected(self) -> bool:
        return self.record.outcome is self.expected

    @property
    def line(self) -> str:
        """One line for the demo's console: result, serial, what was done."""
        d, s = self.record.device, self.record.sanitization
        what = s.title if s is not None else ""
        if s is not None and s.category not in ("", "None"):
            what += f" ({s.category})"
        return f"{self.record.result_text}  {d.serial}  {d.manufacturer} {d.model}: {what}"


def _setup_screen(path: Path) -> Path:
    """A picture of the Z10's setup wizard, as an operator's photo would show it."""
    from PIL import Image, ImageDraw
    image = Image.new("RGB", (480, 800), (18, 18, 18))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 120, 440, 180), outline=(0, 150, 220), width=3)
    for n, text in enumerate(("Welcome", "Select your language", "English (United Kingdom)",
                              "Deutsch", "Francais", "Next")):
        draw.text((60, 140 + n * 90 if n else 60), text, fill=(230, 230, 230))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG")
    return path


def run_manual_demo(out_dir: Path, signer: Any, operator: Operator,
                    media: Media) -> list[ManualResult]:
    from phonewipe.entered import CERT_DIR, sign_and_log
    from phonewipe.erase.attest import Attestation
    from phonewipe.erase.audit import AuditLog, now_iso
    from phonewipe.erase.destroy import DestroyedDevice, Destruction, destruction_record
    from phonewipe.erase.job import JobSettings
    from phonewipe.erase.manual import find_platform
    from phonewipe.erase.photos import check_photos
    results = []
    photo = check_photos([_setup_screen(out_dir / "photos" / "bb10-setup-screen.png")])
    with AuditLog(out_dir / "audit.sqlite", signer=signer) as audit:
        bb = Attestation(find_platform("blackberry-10"),
                         Identity(platform="blackberry-10", manufacturer="BlackBerry",
                                  model="Z10 (STL100-2)", serial="BB10DEMO0001",
                                  imeis=("356938035643809",), os_version="10.3.3.2205"),
                         JobSettings(operator=operator, asset_tag="DEMO-BB-1", media=media), audit)
        bb.start(photo)
        while (step := bb.next_step()) is not None:
            bb.confirm(step, True, SCRIPTED)
        record = bb.record()
        results.append(ManualResult(record, sign_and_log(record, signer, audit,
                                                         out_dir / CERT_DIR),
                                    EXPECTED["BB10DEMO0001"]))
        shredded = Destruction(method="shred", facility="demo bench, secure room",
                               witness="Demo Witness", equipment="a 2 mm disintegrator",
                               particle_mm=2.0, witness_title="Security officer")
        dead = DestroyedDevice(Identity(platform="android", manufacturer="Samsung",
                                        model="Galaxy S7 (does not power on)",
                                        serial="R58DEMODEAD1", imeis=("490154203237518",)),
                               asset_tag="DEMO-DEAD-1")
        record = destruction_record(dead, shredded, replace(operator), [],
                                    destroyed_at=now_iso(), batch_id="demo-destroyed",
                                    audit=audit, media=media)
        results.append(ManualResult(record, sign_and_log(record, signer, audit,
                                                         out_dir / CERT_DIR),
                                    EXPECTED["R58DEMODEAD1"]))
    return results
