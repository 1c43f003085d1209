"""
A cluster across hosts: three nodes in network namespaces on a bridge, each
with its own address, the cluster key from a file; a client on a fourth
host asks every address.  Exactly one answers; kill -9 it and another does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from srp.testing.netns import Host, lan
from srp.testing.processes import NodeProcess, writeKeyFile, writeNodeConfig
from tests.conftest import BIN


def answering(client: Host, hosts: list[Host]) -> list[str]:
    """The addresses among C{hosts} that answer CLNT_UCAST_INST for SALES."""
    found = []
    for host in hosts:
        result = subprocess.run(
            client.command(str(BIN / "srp"), "resolve", "--json", "--timeout", "0.3",
                           f"{host.address}\\SALES"),
            capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            found.append((host.address, json.loads(result.stdout)[0]["tcp"]))
    return [address for address, _ in found]


def test_one_active_across_hosts_and_takeover_after_kill_9(tmp_path: Path) -> None:
    keyFile = writeKeyFile(tmp_path / "cluster.key")
    with lan(4) as (a, b, c, client):
        servers = [a, b, c]
        addresses = [h.address for h in servers]
        nodes = []
        try:
            for index, host in enumerate(servers):
                config = writeNodeConfig(
                    tmp_path / f"node{index}.toml", [host.address],
                    [{"name": "SALES", "tcp": 50000 + index, "priority": index}],
                    tables={"cluster": {"name": "lan", "addresses": addresses,
                                        "key_file": str(keyFile)}})
                nodes.append(NodeProcess(config, tmp_path / f"node{index}.log",
                                         prefix=host.command()).start())
            deadline = time.monotonic() + 10
            while sum("Passive in cluster" in n.log() for n in nodes) < 2:
                assert time.monotonic() < deadline, [n.log() for n in nodes]
                time.sleep(0.1)
            [first] = answering(client, servers)
            victim = nodes[addresses.index(first)]
            os.kill(victim.pid, signal.SIGKILL)
            time.sleep(1.5)
            [second] = answering(client, servers)
            assert second != first
            assert "unauthenticated" not in " ".join(n.log() for n in nodes)
        finally:
            for node in nodes:
                node.stop()
