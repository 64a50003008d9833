"""Nothing is touched until the input is right (#18 item 1): an unknown method, a bad plan
setting, a bad config value or a missing operator stop `erase` and `station` with one line
and exit 2 before any discovery; `--help` lists each device family's methods."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from phonewipe.erase.config import load_config
from phonewipe.erase.errors import ConfigError, UsageError
from phonewipe.erase.plugin import Registry

OPERATOR = ["--operator", "Ann Example", "--organization", "ACME Refurb"]


@pytest.fixture
def untouched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any discovery or plugin instance the commands ask for is recorded (and refused)."""
    import phonewipe.cli
    import phonewipe.station_commands
    asked: list[str] = []

    def refuse(*_: Any, **__: Any) -> Any:
        asked.append("touched")
        raise AssertionError("a phone was looked for before the input was checked")
    monkeypatch.setattr(phonewipe.cli, "discover", refuse)
    monkeypatch.setattr(phonewipe.cli, "plugins_of", refuse)
    monkeypatch.setattr(phonewipe.station_commands, "plugins_of", refuse)
    return asked


def run(tmp_path: Path, *args: str, config: str = "") -> Any:
    from phonewipe.cli import cli
    path = tmp_path / "phonewipe.toml"
    path.write_text(config)
    return CliRunner().invoke(cli, ["--config", str(path), *args])


def error_line(result: Any) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("command", ["erase", "station"])
def test_a_misspelt_method_is_refused_before_any_phone_is_looked_for(
        tmp_path: Path, untouched: list[str], command: str) -> None:
    args = ["erase", "SERIAL"] if command == "erase" else ["station"]
    result = run(tmp_path, *args, "--out", str(tmp_path / "out"), "--method", "adb-raw-zero",
                 *OPERATOR)
    assert result.exit_code == 2
    line = error_line(result)
    assert "unknown method 'adb-raw-zero'" in line and "did you mean adb-raw-zeros" in line
    assert "adb: adb-raw-pattern" in line and "fastboot: fastboot-raw-pattern" in line
    assert untouched == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["erase", "station"])
def test_a_bad_plan_setting_is_refused_before_discovery(tmp_path: Path, untouched: list[str],
                                                       command: str) -> None:
    args = ["erase", "--all"] if command == "erase" else ["station"]
    result = run(tmp_path, *args, "--out", str(tmp_path / "out"), "--confidence", "2", *OPERATOR)
    assert result.exit_code == 2 and "confidence" in error_line(result)
    assert untouched == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["erase", "station"])
def test_a_real_erasure_needs_an_operator_and_an_organization(tmp_path: Path, untouched: list[str],
                                                              command: str) -> None:
    args = ["erase", "--all"] if command == "erase" else ["station"]
    result = run(tmp_path, *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    line = error_line(result)
    assert "no operator name and no organization" in line
    assert "--operator" in line and "[operator]" in line
    result = run(tmp_path, *args, "--out", str(tmp_path / "out"), "--operator", "Ann")
    assert result.exit_code == 2 and "no organization" in error_line(result)
    assert untouched == [] and not (tmp_path / "out").exists()


def test_the_config_may_name_the_operator(tmp_path: Path, untouched: list[str]) -> None:
    result = run(tmp_path, "erase", "--all", "--out", str(tmp_path / "out"),
                 config='[operator]\nname = "Ann"\norganization = "ACME"\n')
    assert untouched == ["touched"]  # checked, then discovery (refused by the fixture)
    assert result.exit_code != 2


@pytest.mark.parametrize("command", ["erase", "station"])
def test_help_lists_each_familys_methods(tmp_path: Path, command: str) -> None:
    result = run(tmp_path, command, "--help")
    text = " ".join(result.output.split())
    for family, names in Registry.load().method_names().items():
        assert f"{family}:" in text
        for name in names:
            assert name in text.replace("- ", "-"), name  # the help wraps at hyphens


def test_the_declared_method_names_are_the_ones_the_sessions_offer() -> None:
    from phonewipe.protocols.adb import client
    from phonewipe.protocols.fastboot import session as fastboot
    from phonewipe.protocols.virtual import session as virtual
    declared = Registry.load().method_names()
    assert set(declared["adb"]) == {m.name for m in (client.RAW_PATTERN, client.RAW_ZEROS,
                                                      client.FILL_RESET, client.FACTORY_RESET)}
    assert set(declared["fastboot"]) == {m.name for m in (fastboot.RAW_PATTERN, fastboot.DISCARD,
                                                           fastboot.UNLOCK_WIPE)}
    assert set(declared["virtual"]) == {virtual.PATTERN.name, virtual.ZEROS.name}


def test_a_plugin_that_declares_no_names_is_not_checked() -> None:
    registry = Registry.load()
    with pytest.raises(UsageError):
        registry.check_method("adb-raw-zero")
    from phonewipe.erase.plugin import Plugin

    class Undeclared(Plugin):  # e.g. a third-party plugin written before the declaration
        name = "undeclared"

        def discover(self) -> list:
            return []

        def open(self, endpoint: Any) -> Any:
            raise NotImplementedError
    lenient = Registry({**registry.classes, "undeclared": Undeclared}, {})
    lenient.check_method("acme-overwrite")  # it might offer this one: not refused


@pytest.mark.parametrize("text,words", [
    ('[verification]\nconfidence = "abc"\n', "[verification] confidence must be a number"),
    ('[station]\ntimeout = "long"\n', "[station] timeout must be a number"),
    ("[operator]\nname = 5\n", "[operator] name must be a string"),
    ("[destination]\nkind = 3\n", "[destination] kind must be a string"),
    ('[adb]\nport = "abc"\n', "[adb] port must be a number"),
    ("[operater]\nname = 'x'\n", "unknown table [operater]"),
    ("[operator]\nnmae = 'x'\n", "unknown key 'nmae' in [operator]"),
])
def test_config_errors_name_the_file_the_table_and_the_key(tmp_path: Path, text: str,
                                                           words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    line = err.value.line()
    assert str(path) in line and words in line, line
    assert "__init__" not in line and "unexpected keyword" not in line


def test_a_misspelt_table_or_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[operater]\nname = 'x'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "did you mean 'operator'" in err.value.line()
    path.write_text("[station]\ntimout = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "did you mean 'timeout'" in err.value.line()
