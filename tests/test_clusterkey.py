"""
The cluster key file's rule, one for the code and both docs: others may not
access it, its group may not write it (600, 400 and 640 load); and a
key_file under systemd's $CREDENTIALS_DIRECTORY.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from srp.clusterkey import BadKey, loadKey
from srp.server.config import ConfigError, parseConfig

KEY = b"0123456789abcdef0123456789abcdef"


def keyFile(directory: Path, mode: int) -> Path:
    path = directory / "cluster.key"
    path.write_bytes(KEY + b"\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_modes_that_load(tmp_path: Path, mode: int) -> None:
    assert loadKey(keyFile(tmp_path, mode)) == KEY


@pytest.mark.parametrize(("mode", "complaint"), [
    (0o644, "is open to others (mode 644); run: chmod 600"),
    (0o604, "is open to others (mode 604); run: chmod 600"),
    (0o602, "is open to others (mode 602); run: chmod 600"),
    (0o660, "is writable by its group (mode 660); run: chmod 600"),
    (0o620, "is writable by its group (mode 620); run: chmod 600"),
])
def test_modes_refused(tmp_path: Path, mode: int, complaint: str) -> None:
    with pytest.raises(BadKey, match=re.escape(complaint)):
        loadKey(keyFile(tmp_path, mode))


def test_key_file_in_the_credentials_directory(tmp_path: Path) -> None:
    keyFile(tmp_path, 0o400)  # what systemd's LoadCredential= makes
    document = {"cluster": {"key_file": "$CREDENTIALS_DIRECTORY/cluster.key"}}
    config = parseConfig(document, "n.toml", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.cluster is not None and config.cluster.key == KEY
    braced = {"cluster": {"key_file": "${CREDENTIALS_DIRECTORY}/cluster.key"}}
    assert parseConfig(braced, "n.toml", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_key_file_naming_an_unset_variable(tmp_path: Path) -> None:
    document = {"cluster": {"key_file": "$CREDENTIALS_DIRECTORY/cluster.key"}}
    with pytest.raises(ConfigError, match=r"^n.toml \[cluster\]: key_file names "
                       r"\$CREDENTIALS_DIRECTORY, which is not set \(systemd sets "):
        parseConfig(document, "n.toml", environ={})
    with pytest.raises(ConfigError, match="key_file 'a\\$': Invalid placeholder"):
        parseConfig({"cluster": {"key_file": "a$"}}, "n.toml", environ={})


def test_tcp_0_is_any_free_port_for_a_relayed_instance_only() -> None:
    relayed = parseConfig({"instances": [{"name": "S", "relay": "127.0.0.1:1433", "tcp": 0}]})
    assert relayed.instances[0].info.tcp is None
    with pytest.raises(ConfigError, match="tcp port 0 is not a port number"):
        parseConfig({"instances": [{"name": "S", "tcp": 0}]})
