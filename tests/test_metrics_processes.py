"""
/metrics of real `srp serve` processes: the counters against the requests a
test sent (exact numbers), the role after a kill -9 of the active, an
instance's health after its server closes; the exposition checked by
prometheus_client's own parser, and by `promtool check metrics` where it
is installed (the Debian package `prometheus` is not: 96 MB for one tool).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from srp.testing.load import RequestStream
from srp.testing.processes import (
    NodeProcess,
    freeLoopbackAddress,
    freeTCPPort,
    writeNodeConfig,
)
from srp.wire import InstanceRequest
from tests.conftest import BIN, srp
from tests.test_cluster_processes import waitFor

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: tuple[str, int]) -> Samples:
    """GET /metrics, check the exposition, and return every sample."""
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.read().decode()
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run([promtool, "check", "metrics"], input=text,
                                 capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def metric(address: tuple[str, int], name: str, **labels: str) -> Callable[[], float | None]:
    """A function that scrapes C{address} and returns one sample."""
    return lambda: value(scrape(address), name, **labels)


def test_the_counters_match_the_requests_sent(tmp_path: Path) -> None:
    host = freeLoopbackAddress()
    address = (host, freeTCPPort(host))
    config = writeNodeConfig(tmp_path / "node.toml", [host],
                             [{"name": "SALES", "tcp": 50201, "check": "none"}],
                             tables={"metrics": {"listen": f"{host}:{address[1]}"}})
    with NodeProcess(config, tmp_path / "node.log"):
        known = RequestStream((host, 1434), InstanceRequest("SALES").encode(), rate=400,
                              timeout=0.5).run(1.0)
        assert known and all(e.reply is not None for e in known)
        unknown = RequestStream((host, 1434), InstanceRequest("NOPE").encode(), rate=200,
                                timeout=0.05).run(0.5)
        assert unknown and all(e.reply is None for e in unknown)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as garbage:
            for n in range(17):
                garbage.sendto(b"\x99" + bytes([n]), (host, 1434))
        waitFor(lambda: metric(address, "srp_requests_total", kind="other",
                               outcome="malformed")() == 17)
        samples = scrape(address)
        requests = {dict(labels)["outcome"]: count for (name, labels), count in samples.items()
                    if name == "srp_requests_total"}
        assert requests == {"answered": len(known), "unknown": len(unknown), "malformed": 17}
        assert value(samples, "srp_requests_total", kind="instance",
                     outcome="answered") == len(known)
        assert value(samples, "srp_reply_bytes_total") == sum(len(e.reply or b"")
                                                               for e in known)
        assert value(samples, "srp_role", role="standalone") == 1
        assert value(samples, "srp_instance_up", instance="SALES") == 1
        started = value(samples, "srp_start_time_seconds")
        assert started is not None and time.time() - 30 < started < time.time()

        status = json.loads(srp("status", "--json", host).stdout)
        assert status["version"] == "0.1.0"
        assert status["started"] == started
        assert 0 <= status["uptime"] <= time.time() - started + 1
        table = srp("status", host).stdout.splitlines()
        assert table[3].split()[:2] == ["VERSION", "STARTED"]
        assert table[4].split()[0] == "0.1.0"


def test_the_survivor_of_a_kill_9_shows_active_and_one_takeover(tmp_path: Path) -> None:
    host = freeLoopbackAddress()
    addresses = [(host, freeTCPPort(host)) for _ in range(2)]
    nodes = []
    try:
        for index, metrics in enumerate(addresses):
            config = writeNodeConfig(
                tmp_path / f"node{index}.toml", [host],
                [{"name": f"N{index}", "tcp": 50210 + index, "check": "none"}],
                tables={"cluster": {"name": "metrics"}})
            # The metrics port from the command line, to run --metrics too.
            nodes.append(NodeProcess(config, tmp_path / f"node{index}.log", argv=(
                str(BIN / "srp"), "serve", "--config", str(config),
                "--metrics", f"{host}:{metrics[1]}")).start())
            if index == 0:
                waitFor(metric(metrics, "srp_role", role="active"))
        waitFor(metric(addresses[1], "srp_role", role="passive"))
        assert value(scrape(addresses[0]), "srp_passives") == 1
        os.kill(nodes[0].pid, signal.SIGKILL)
        waitFor(metric(addresses[1], "srp_role", role="active"), timeout=5)
        samples = scrape(addresses[1])
        assert value(samples, "srp_takeovers_total") == 1
        assert value(samples, "srp_active_lost_total") == 1
        assert value(samples, "srp_epoch") == 2
        assert value(samples, "srp_role", role="passive") == 0
    finally:
        for node in nodes:
            node.stop()


def test_an_instance_whose_server_closes_goes_down_and_comes_back(tmp_path: Path) -> None:
    host = freeLoopbackAddress()
    address = (host, freeTCPPort(host))
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, 0))
    server.listen()
    port = server.getsockname()[1]
    config = writeNodeConfig(tmp_path / "node.toml", [host], [
        {"name": "SALES", "tcp": port, "check": "tcp", "check_interval": 0.1, "fall": 2,
         "rise": 1}], tables={"metrics": {"listen": f"{host}:{address[1]}"}})
    with NodeProcess(config, tmp_path / "node.log"):
        waitFor(lambda: (metric(address, "srp_health_checks_total")() or 0) >= 2)
        samples = scrape(address)
        assert value(samples, "srp_instance_up", instance="SALES") == 1
        assert value(samples, "srp_health_check_failures_total") == 0
        server.close()
        waitFor(lambda: metric(address, "srp_instance_up", instance="SALES")() == 0)
        samples = scrape(address)
        assert value(samples, "srp_registrations", state="down") == 1
        assert value(samples, "srp_registrations", state="up") == 0
        failures = value(samples, "srp_health_check_failures_total")
        assert failures is not None and failures >= 2
        checks = value(samples, "srp_health_checks_total")
        assert checks is not None and checks > failures
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen()
        waitFor(lambda: metric(address, "srp_instance_up", instance="SALES")() == 1)
        assert value(scrape(address), "srp_registrations", state="up") == 1
    server.close()


def test_a_metrics_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    host = freeLoopbackAddress()
    with socket.socket() as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = writeNodeConfig(tmp_path / "node.toml", [host],
                                 [{"name": "SALES", "tcp": 50220, "check": "none"}])
        result = srp("serve", "--config", str(config), "--metrics", f"{host}:{port}")
    assert result.returncode == 1
    assert result.stderr == (f"srp: cannot serve metrics on {host}:{port}/tcp: "
                             "Address already in use\n")
