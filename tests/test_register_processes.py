"""
`srp register` and `srp unregister`, installed, against two real `srp serve`
processes sharing one loopback address and a cluster key; answers read by
pytds's SQL Server Browser client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytds.instance_browser_client import resolve_instance_port

from srp.testing.processes import (
    NodeProcess,
    freeLoopbackAddress,
    stopProcess,
    writeClusterConfigs,
)
from tests.conftest import BIN, srp
from tests.test_cluster_processes import active, waitFor

KEY = "registration-test-key-0123456789"


def port(address: str, instance: str = "LEASED") -> int | None:
    """What pytds is told about C{instance}, or None if nothing answers in time."""
    try:
        return int(resolve_instance_port(address, None, instance, timeout=0.5))
    except Exception:
        return None


@pytest.fixture
def keyFile(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.key"
    path.write_text(KEY)
    path.chmod(0o600)
    return path


@pytest.fixture
def cluster(tmp_path: Path, keyFile: Path) -> Iterator[tuple[str, list[NodeProcess]]]:
    address = freeLoopbackAddress()
    nodes = []
    try:
        for index, config in enumerate(writeClusterConfigs(
                tmp_path, address, {"name": "reg", "key_file": str(keyFile)})):
            nodes.append(NodeProcess(config, tmp_path / f"node{index}.log").start())
        waitFor(lambda: any("Passive in cluster" in n.log() for n in nodes))
        yield address, nodes
    finally:
        for node in nodes:
            node.stop()


def register(address: str, keyFile: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return srp("register", "--cluster", "reg", "--key-file", str(keyFile), address, "LEASED",
               *more)


def test_register_resolve_unregister(cluster: tuple[str, list[NodeProcess]],
                                     keyFile: Path) -> None:
    address, _ = cluster
    result = register(address, keyFile, "--tcp", "41433", "--ttl", "60", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"instance": "LEASED", "priority": 0,
                                         "result": "registered", "tcp": 41433, "np": None,
                                         "ttl": 60.0}
    assert port(address) == 41433
    resolved = srp("resolve", "--json", "--cluster", "reg", "--key-file", str(keyFile),
                   f"{address}\\LEASED")
    assert [c["tcp"] for c in json.loads(resolved.stdout)] == [41433]
    moved = register(address, keyFile, "--tcp", "41500")
    assert moved.returncode == 0, moved.stderr
    assert port(address) == 41500
    gone = srp("unregister", "--cluster", "reg", "--key-file", str(keyFile), address, "LEASED")
    assert gone.returncode == 0, gone.stderr
    assert port(address) is None
    again = srp("unregister", "--cluster", "reg", "--key-file", str(keyFile), address,
                "LEASED")
    assert again.returncode == 1
    assert again.stderr == "srp: refused: LEASED at priority 0 is not registered by command\n"


def test_a_short_lease_expires(cluster: tuple[str, list[NodeProcess]], keyFile: Path) -> None:
    address, _ = cluster
    assert register(address, keyFile, "--tcp", "41433", "--ttl", "1.5").returncode == 0
    registered = time.monotonic()
    assert port(address) == 41433
    waitFor(lambda: port(address) is None, timeout=5)
    assert 1.0 < time.monotonic() - registered < 3.0


def test_kill_9_of_the_active_keeps_the_lease(cluster: tuple[str, list[NodeProcess]],
                                             keyFile: Path) -> None:
    address, nodes = cluster
    assert register(address, keyFile, "--tcp", "41433", "--ttl", "60").returncode == 0
    victim = active(nodes)
    os.kill(victim.pid, signal.SIGKILL)
    [survivor] = [n for n in nodes if n is not victim]
    waitFor(lambda: "Active for cluster" in survivor.log(), timeout=5)
    assert port(address) == 41433


def test_wrong_key_and_no_key_are_refused_plainly(cluster: tuple[str, list[NodeProcess]],
                                                  tmp_path: Path) -> None:
    address, _ = cluster
    wrong = tmp_path / "wrong.key"
    wrong.write_text("another-key-of-enough-bytes-0123")
    wrong.chmod(0o600)
    result = register(address, wrong, "--tcp", "41433", "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stderr.startswith("srp: no answer from ")
    assert "wrong cluster key?" in result.stderr and result.stderr.count("\n") == 1
    assert port(address) is None


def test_keep_renews_and_unregisters_on_sigterm(cluster: tuple[str, list[NodeProcess]],
                                                keyFile: Path) -> None:
    address, _ = cluster
    keeper = subprocess.Popen(
        [str(BIN / "srp"), "register", "--keep", "--ttl", "1.2", "--cluster", "reg",
         "--key-file", str(keyFile), address, "LEASED", "--tcp", "41433"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        waitFor(lambda: port(address) == 41433, timeout=10)
        time.sleep(3.0)  # several leases long: only renewals keep it
        assert port(address) == 41433
    finally:
        code = stopProcess(keeper)
    assert code == 0, keeper.stderr.read() if keeper.stderr else ""
    assert port(address) is None


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [(("register", "127.0.0.1", "X"), "--tcp PORT or --np PIPE is required"),
     (("register", "127.0.0.1", "X", "--tcp", "0"), "--tcp 0 is out of range (1-65535)"),
     (("register", "127.0.0.1", "X", "--tcp", "x"), "--tcp 'x' is not a number"),
     (("register", "127.0.0.1", "X" * 33, "--tcp", "1"), "at most 32"),
     (("register", "127.0.0.1", "A;B", "--tcp", "1"), "contains ';'"),
     (("register", "127.0.0.1", "X", "--tcp", "1", "--ttl", "-1"), "--ttl -1 is out of range"),
     (("register", "127.0.0.1", "X", "--tcp", "1", "--priority", "65536"),
      "--priority 65536 is out of range (0-65535)"),
     (("unregister", "127.0.0.1"), "Wrong number of arguments")],
)
def test_bad_input_is_one_line_and_exit_2(arguments: tuple[str, ...], complaint: str) -> None:
    result = srp(*arguments)
    assert result.returncode == 2
    assert complaint in result.stderr.splitlines()[0]


def test_unreachable_cluster_exits_1() -> None:
    result = srp("register", freeLoopbackAddress(), "X", "--tcp", "1", "--timeout", "0.3")
    assert result.returncode == 1
    assert "no answer from" in result.stderr and result.stderr.count("\n") == 1
