"""Plugins declare, the core asks: options, config tables, modes, --via choices; a plugin
that fails to load is one warning line, never the end of the tool."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from phonewipe.erase.config import load_config
from phonewipe.erase.errors import ConfigError
from phonewipe.erase.plugin import Registry

PHONEWIPE = [sys.executable, "-m", "phonewipe"]


def broken_plugin_dist(root: Path) -> Path:
    """A third party's installed distribution whose entry point cannot be imported."""
    info = root / "acme_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[phonewipe.protocols]\nacme = acme_missing_module:AcmePlugin\n")
    return root


def test_the_built_in_plugins_come_from_entry_points_and_declare_themselves() -> None:
    registry = Registry.load()
    assert {"adb", "fastboot"} <= set(registry.classes)
    adb, fastboot = registry.classes["adb"], registry.classes["fastboot"]
    assert adb.reads_back and "adb" in adb.modes and "fastboot" in adb.reboots_into
    assert not fastboot.reads_back and fastboot.reboots_into == ("adb",)
    assert registry.via_modes() == ["adb", "fastboot"]
    flags = {spec.flag(name) for name, spec in registry.option_specs()}
    assert {"--adb-port", "--fastboot-tcp", "--fastboot-timeout"} <= flags


def test_a_broken_plugin_is_skipped_with_one_warning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(broken_plugin_dist(tmp_path)))
    registry = Registry.load()
    assert "acme" in registry.failures and "acme_missing_module" in registry.failures["acme"]
    assert {"adb", "fastboot"} <= set(registry.classes)


def test_the_cli_warns_about_a_broken_plugin_and_goes_on(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(broken_plugin_dist(tmp_path / "site"))}
    result = subprocess.run([*PHONEWIPE, "emulate", "--list"], capture_output=True, text=True,
                            env=env, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "protocol plugin acme skipped" in warnings[0]
    assert "rooted" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("text, words", [
    ("[operater]\nname = 'x'\n", ["unknown table [operater]", "operator"]),
    ("[adb]\ntimout = 3\n", ["unknown key 'timout' in [adb]", "port"]),
    ("[adb]\nport = 'abc'\n", ["[adb] port must be a number", "'abc'"]),
    ("[adb]\nport = 70000\n", ["[adb] port 70000 is outside 1..65535"]),
    ("[fastboot]\ntcp = 5\n", ["[fastboot] tcp must be a string"]),
])
def test_config_mistakes_name_the_table_and_key(tmp_path: Path, text: str,
                                                words: list[str]) -> None:
    path = tmp_path / "phonewipe.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = caught.value.line()
    assert all(word in line for word in words), line


def test_plugin_tables_become_plugin_options(tmp_path: Path) -> None:
    path = tmp_path / "phonewipe.toml"
    path.write_text("[adb]\nport = 5099\n[fastboot]\ntcp = ['127.0.0.1:5554']\n")
    config = load_config(path)
    assert config.plugin_values == {"adb_port": 5099, "fastboot_tcp": ["127.0.0.1:5554"]}


def test_a_plugin_flag_out_of_range_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "phonewipe.toml").write_text("[adb]\nport = 1\n")
    result = subprocess.run([*PHONEWIPE, "--adb-port", "70000", "devices"], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and "70000" in result.stderr  # click's range check


def test_a_handset_is_served_by_its_family_of_modes_only() -> None:
    from phonewipe.erase.emulation.fleet import serving
    from phonewipe.erase.plugin import load_plugins
    plugins = load_plugins()
    assert {p.name for p in serving(plugins, "adb")} == {"adb", "fastboot"}
    assert {p.name for p in serving(plugins, "fastboot")} == {"adb", "fastboot"}
    assert {p.name for p in serving(plugins, "virtual")} == {"virtual"}
