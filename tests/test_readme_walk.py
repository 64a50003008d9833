"""A scripted walk of the README's demo path (#18, done means): every command the README
shows for it, in order, in a fresh directory with the installed package (`.venv` there is
this test's virtualenv), at 80 columns in a pipe, each exiting as the README says."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_binary

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[1]


def demo_path_commands() -> list[str]:
    """The shell lines of the README's code blocks before "Erasing real phones", plus the
    station's try-it-without-phones command, in the order the README shows them."""
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", head, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                commands.append(line)
    try_it = re.search(r"Try it without phones: `(phonewipe station[^`]*)`", text, re.S)
    assert try_it, "the README's station try-it command is gone"
    commands.append(" ".join(try_it.group(1).split()))
    return commands


def section_commands(title: str) -> list[str]:
    """The shell lines of the code blocks of the README section headed ``title``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n{title}\n", 1)[1].split("\n#", 1)[0]
    return [line.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)
            for line in block.splitlines() if line.strip()]


def make_recipe(target: str) -> str:
    """What `make TARGET` runs (the Makefile's recipe line), with $(BIN) as .venv/bin."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(rf"^{target}:.*\n\t(.+)$", makefile, re.M)
    assert recipe, f"no {target} target in the Makefile"
    return recipe.group(1).replace("$(BIN)", ".venv/bin")


def test_the_readme_demo_path_runs_as_documented(tmp_path: Path) -> None:
    require_binary("adb")
    require_binary("pdfsig")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    bin_dir = Path(sys.prefix) / "bin"
    env = {**os.environ, "COLUMNS": "80", "HOME": str(tmp_path / "home"),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    commands = demo_path_commands()
    assert commands[:2] == ["make demo", "make test"], commands
    validation = section_commands("### A second person's validation")  # on the demo's output
    assert any("cert validate" in c for c in validation), validation
    commands += validation
    ran = []
    for command in commands:
        if command == "make test":
            continue  # this suite
        shown = command
        if command == "make demo":
            command = make_recipe("demo")
        command = command.replace("/tmp/st", str(tmp_path / "st"))
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        ran.append(shown)
        assert "Traceback" not in result.stdout + result.stderr, (shown, result.stderr)
        assert result.returncode == 0, f"{shown}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        if shown == "make demo":  # what a user copies is whole at 80 columns in a pipe
            assert "…" not in result.stdout, result.stdout
            lines = result.stdout.splitlines()
            suggested = lines[lines.index("check them with:") + 1].strip()
            check = subprocess.run(["bash", "-c", suggested.replace("phonewipe", ".venv/bin/phonewipe", 1)],
                                   cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert check.returncode == 0, (suggested, check.stdout, check.stderr)
        if "pdfsig" in command:
            pdfs = list((tmp_path / "demo-output" / "certificates").glob("*.pdf"))
            assert pdfs and result.stdout.count("Signature is Valid") == len(pdfs), result.stdout
    assert any("cert verify" in c for c in ran) and any("audit verify" in c for c in ran)
    assert any(c.startswith("phonewipe station") for c in ran)
    [addendum] = (tmp_path / "demo-output" / "certificates").glob("*-validation.pdf")
    assert addendum.name.startswith("PWROOT0000-")


def test_the_readme_configuration_is_a_config_phonewipe_accepts(tmp_path: Path) -> None:
    """The Configuration section's TOML, as printed: every table and key exists, every value
    is valid, and [media] and [fleet] mean what the README says."""
    from phonewipe.erase.config import load_config
    from phonewipe.erase.mdm import is_own
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    [toml] = re.findall(r"```toml\n(.*?)```", section, re.S)
    path = tmp_path / "config.toml"
    path.write_text(toml)
    config = load_config(path)
    assert config.media.classification == "Confidential" and config.media.esim == "not present"
    assert config.media.sim_removed is True and config.media.microsd_removed is True
    assert config.fleet_mdm == "Intune" and is_own("com.microsoft.intune", config.fleet_mdm)
    assert config.second_look_share == 0.05
