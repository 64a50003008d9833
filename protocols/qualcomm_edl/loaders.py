"""The operator's directory of Firehose programmers. A programmer is signed for one SoC
and one OEM key, so it is chosen by the phone's MSM HW id and OEM public-key hash, named
as the community collections name them: ``<hwid, 16 hex digits>_<first 16 hex digits of
the key hash>_<anything>.{bin,elf,mbn,melf}``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phonewipe.erase.errors import PhonewipeError

from .sahara import SaharaInfo

SUFFIXES = (".bin", ".elf", ".mbn", ".melf")
MAX_LOADER = 16 * 1024 * 1024


@dataclass(frozen=True)
class Loader:
    path: Path
    data: bytes


class NoLoader(PhonewipeError):
    """No programmer in the directory matches the phone."""


def expected_name(info: SaharaInfo) -> str:
    return f"{info.hwid_text}_{info.pkhash.hex()[:16]}_fhprg.bin"


def find_loader(directory: str | Path | None, info: SaharaInfo) -> Loader:
    """The programmer for this phone; NoLoader naming exactly what to get."""
    what = (f"the Firehose programmer for HW id {info.hwid_text} signed with OEM key hash "
            f"{info.pkhash.hex()[:16]}… (from the manufacturer or its service tools), saved "
            f"as {expected_name(info)}")
    if not directory:
        raise NoLoader("no programmer directory was given for this EDL phone",
                       f"get {what} into a directory and pass it with --edl-loaders DIR "
                       "([edl] loaders in the config)")
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise NoLoader(f"the programmer directory {folder} does not exist",
                       f"create it, put {what} there, and run again")
    prefix = f"{info.hwid_text}_{info.pkhash.hex()[:16]}".lower()
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if name.startswith(prefix) and name.endswith(SUFFIXES) and path.is_file():
            if path.stat().st_size > MAX_LOADER:
                continue
            return Loader(path, path.read_bytes())
    raise NoLoader(f"no programmer in {folder} matches this phone (HW id {info.hwid_text}, "
                   f"OEM key hash {info.pkhash.hex()[:16]}…)", f"get {what} and put it in {folder}")
