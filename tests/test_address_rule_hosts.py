"""
The address rule across three network-namespace hosts: an address answers
only with ports that listen at it.

Each host runs an srp node of one cluster (named, keyed from a file) and a
PRELOGIN server for its instances: A1 on A, B1 on B, C1 on C, and SHARED
with its primary on A and its standby on B.  C's node starts first and is
the active: it answers C1 as registered and the others through relays at
its own address.  From a fourth host, pytds, impacket and FreeTDS tsql each
ask every host's address for every instance; every port any of them is told
must reach, at the address asked, the server of the instance asked, and
only the active's address answers.  And C{srp resolve} without the cluster
name reports the host where each instance lives.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from srp.testing.netns import Host, lan
from srp.testing.processes import NodeProcess, stopProcess, writeKeyFile, writeNodeConfig
from tests.conftest import BIN
from tests.test_health_clients import waitUntil

ROOT = Path(__file__).parent.parent
#: Instance name and tcp port (distinct everywhere), by host index, with the priority.
INSTANCES = [
    [("A1", 41101, 0), ("SHARED", 41102, 0)],
    [("B1", 41201, 0), ("SHARED", 41202, 1)],
    [("C1", 41301, 0)],
]
NAMES = ["A1", "B1", "C1", "SHARED"]


def preloginServer(host: Host, instances: list[tuple[str, int, int]]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        host.command(sys.executable, "-m", "srp.testing.tds", host.address,
                     *(f"{name}={port}" for name, port, _ in instances)),
        cwd=ROOT, stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"listening\n"
    return process


def waitForLog(nodes: list[NodeProcess], text: str, count: int) -> None:
    waitUntil(lambda: sum(text in n.log() for n in nodes) >= count, 10)


def test_every_client_asking_every_address_reaches_the_instance_asked(tmp_path: Path) -> None:
    keyFile = writeKeyFile(tmp_path / "cluster.key")
    with lan(4) as (a, b, c, client):
        servers = [a, b, c]
        addresses = [h.address for h in servers]
        processes: list[subprocess.Popen[bytes]] = []
        nodes: list[NodeProcess] = []
        try:
            for host, instances in zip(servers, INSTANCES, strict=True):
                processes.append(preloginServer(host, instances))
            for index in (2, 0, 1):
                host = servers[index]
                config = writeNodeConfig(
                    tmp_path / f"node{index}.toml", [host.address],
                    [{"name": name, "tcp": port, "priority": priority}
                     for name, port, priority in INSTANCES[index]],
                    tables={"cluster": {"name": "lan3", "addresses": addresses,
                                        "key_file": str(keyFile)}})
                nodes.append(NodeProcess(config, tmp_path / f"node{index}.log",
                                         prefix=host.command()).start())
                if index == 2:
                    waitForLog(nodes, "Active for cluster", 1)
            waitForLog(nodes, "Passive in cluster", 2)
            waitForLog(nodes, "Relaying", 1)
            time.sleep(0.5)  # the passives' Joins, health checks and relays settle

            run = subprocess.run(
                client.command(sys.executable, "-m", "tests.hostclients", str(tmp_path),
                               ",".join(addresses), ",".join(NAMES)),
                cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
            answers = json.loads(run.stdout)
            assert len(answers) == 3 * 3 * 4
            wrong = [r for r in answers if r["port"] is not None and r["reached"] != "right"]
            assert wrong == [], json.dumps(answers, indent=1)
            answered = {(r["client"], r["address"], r["instance"])
                        for r in answers if r["port"] is not None}
            assert answered == {(name, c.address, instance)
                                for name in ("pytds", "impacket", "tsql")
                                for instance in NAMES}, json.dumps(answers, indent=1)
            told = {instance: {r["port"] for r in answers
                               if r["instance"] == instance and r["port"]}
                    for instance in NAMES}
            assert told["C1"] == {41301}
            # Each of the others through one relay at C, the same port for every client.
            for instance in ("A1", "B1", "SHARED"):
                [port] = told[instance]
                assert port not in {41101, 41102, 41201, 41202}

            for instance, host in [("A1", a), ("B1", b), ("C1", c), ("SHARED", a)]:
                resolved = subprocess.run(
                    client.command(str(BIN / "srp"), "resolve", "--json", "--key-file",
                                   str(keyFile), f"{c.address}\\{instance}"),
                    capture_output=True, text=True, timeout=30)
                assert resolved.returncode == 0, resolved.stderr
                places = json.loads(resolved.stdout)
                assert places[0]["host"] == host.address, places
                assert places[0]["node"] is not None  # the extended resolve answered
            log = " ".join(n.log() for n in nodes)
            assert "Traceback" not in log
        finally:
            for node in nodes:
                node.stop()
            for process in processes:
                stopProcess(process)
