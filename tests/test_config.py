"""Node configuration: what a valid file gives, and the one-line error for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from srp.server.config import ConfigError, loadConfig, parseConfig
from srp.server.health import HealthSettings
from srp.wire import ViaAddress, ViaInfo

EXAMPLE = Path(__file__).parent.parent / "examples" / "node.toml"


def test_example_config_loads() -> None:
    config = loadConfig(EXAMPLE)
    assert config.listen == ("127.0.0.1",)
    assert config.port == 1434
    byName = {r.name: r for r in config.instances}
    assert byName["SALES"].info.tcp == 50101
    assert byName["SALES"].dacPort == 50111
    assert byName["REPORTS"].info.via == ViaInfo("DEMOHOST", (ViaAddress("0", 50112),))
    assert byName["AUDIT"].hidden


def test_defaults() -> None:
    config = parseConfig({"instances": [{"name": "A", "tcp": 1}]})
    assert config.listen == ("0.0.0.0",)
    assert config.port == 1434
    assert config.instances[0].info.version == "16.0.1000.6"


def test_ipv6_and_several_addresses() -> None:
    config = parseConfig({"node": {"listen": ["::1", "127.0.0.2", "fe80::1"]}})
    assert config.listen == ("::1", "127.0.0.2", "fe80::1")


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"nod": {}}, r"unknown key 'nod'"),
        ({"node": {"listen": ["127.0.0.1"], "prot": 1}}, r"\[node\]: unknown key 'prot'"),
        ({"node": {"port": 70000}}, r"port 70000 is not a port number"),
        ({"node": {"port": "1434"}}, r"port must be a port number"),
        ({"node": {"listen": ["localhost"]}}, r"'localhost' is not an IPv4 or IPv6 address"),
        ({"node": {"listen": []}}, r"listen is empty"),
        ({"instances": [{"name": "A" * 33}]}, r"#1 \(A+\): instance name .* 33 bytes"),
        ({"instances": [{"name": "A", "tcp": 0}]}, r"#1 \(A\): tcp port 0"),
        ({"instances": [{"name": "A", "tcp": True}]}, r"tcp must be a port number"),
        ({"instances": [{"name": "A", "tpc": 1}]}, r"#1 \(A\): unknown key 'tpc'"),
        ({"instances": [{"tcp": 1}]}, r"#1: every instance needs a name"),
        ({"instances": [{"name": "A"}, {"name": "a"}]}, r"#2 \(a\): .* already defined by #1"),
        ({"instances": [{"name": "A;B"}]}, r"contains ';'"),
        ({"instances": [{"name": "A", "via": "X"}]}, r"at least one NIC:PORT"),
        ({"instances": [{"name": "A", "dac_port": 99999}]}, r"DAC port 99999"),
    ],
)
def test_mistakes_are_one_clear_line(document: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as caught:
        parseConfig(document, "node.toml")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("node.toml")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        loadConfig(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        loadConfig(bad)


def test_health_check_settings() -> None:
    config = parseConfig({"instances": [
        {"name": "A", "tcp": 1},
        {"name": "B", "tcp": 2, "check": "none", "check_interval": 1, "check_timeout": 0.2,
         "fall": 5, "rise": 4, "hide_when_down": True}]})
    assert config.health["A"] == HealthSettings()
    assert config.health["B"] == HealthSettings("none", 1, 5, 4, 0.2)
    assert not config.instances[0].hideWhenDown
    assert config.instances[1].hideWhenDown


@pytest.mark.parametrize(("table", "complaint"), [
    ({"check": "ping"}, "unknown check 'ping'; choose from none, tcp"),
    ({"check": 3}, "check must be the name of a health check, not 3"),
    ({"fall": 0}, "fall and rise at least 1"),
    ({"check_interval": 0}, "check_interval and check_timeout must be more than 0"),
    ({"rise": "2"}, "rise must be a count, not '2'"),
    ({"hide_when_down": "yes"}, "hide_when_down must be true or false, not 'yes'"),
])
def test_bad_health_check_settings(table: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError) as error:
        parseConfig({"instances": [{"name": "A", "tcp": 1, **table}]}, "node.toml")
    assert str(error.value).startswith("node.toml [[instances]] #1 (A): ")
    assert complaint in str(error.value)
