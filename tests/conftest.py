"""Fixtures shared by the tests that run real processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from srp.testing.etcd import EtcdCluster
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig

BIN = Path(sys.executable).parent

#: The instances of the shared test node.
INSTANCES = [
    {"name": "SALES", "tcp": 50101, "np": "\\\\SRPTEST\\pipe\\MSSQL$SALES\\sql\\query",
     "dac_port": 50111},
    {"name": "REPORTS", "tcp": 50102, "version": "15.0.2000.5", "via": "SRPTEST,0:50112"},
    {"name": "AUDIT", "tcp": 50103, "hidden": True, "dac_port": 50113},
]


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A real `srp serve` on a free 127.0.0.N:1434 with L{INSTANCES}."""
    directory = tmp_path_factory.mktemp("node")
    config = writeNodeConfig(directory / "node.toml", [freeLoopbackAddress()], INSTANCES)
    process = NodeProcess(config, directory / "node.log").start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    """
    A real three-member etcd on loopback shared by a module's tests (each
    under a cluster name of its own: L{clusterName}), stopped by PID at the
    module's end, whatever its tests did.
    """
    with EtcdCluster(size=3) as cluster:
        yield cluster


@pytest.fixture
def clusterName(request: pytest.FixtureRequest) -> str:
    """A cluster name of the test's own: tests sharing one etcd share none of its keys."""
    return f"t-{request.node.name}"[:64]  # the longest name a node takes


def srp(*arguments: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the installed `srp` command from outside the source tree."""
    return subprocess.run([str(BIN / "srp"), *arguments], capture_output=True, text=True,
                          timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)
