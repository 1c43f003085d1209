"""
The metrics benchmarks.

- C{metrics_scrape}: what one scrape of C{/metrics} costs a node holding
  10,000 registrations: the collector reading the node and
  C{prometheus_client} rendering the text format, timed in this process on
  nodes of a fake network (no HTTP: the web server adds the same few
  hundred microseconds to every page).
- L{Scraper}: scrapes a real node's C{/metrics} every second from a
  thread, while C{resolve_throughput} measures the node with metrics on.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

from prometheus_client.exposition import generate_latest

from bench.common import Settings, ms, summary, verdict
from srp.cli import formatTable
from srp.records import InstanceInfo, Registration
from srp.server.config import parseConfig
from srp.server.metrics import MAX_INSTANCE_SERIES, nodeRegistry
from srp.server.node import NodeService
from srp.testing import FakeNetwork

#: The target of metrics_scrape: one scrape of 10,000 registrations.
SCRAPE_TARGET = 0.050
#: Registrations the scraped nodes hold.
REGISTRATIONS = 10_000


def _node(own: int, others: int) -> NodeService:
    """A started standalone node with C{own} instances and C{others} registered by another node."""
    document = {"node": {"listen": ["127.0.0.1"]}, "instances": [
        {"name": f"INST{n:05d}", "tcp": 10_000 + n, "check": "none"}
        for n in range(1, own + 1)]}
    node = NodeService(parseConfig(document), FakeNetwork().reactor("127.0.0.1"), nodeId=1)
    node.startService()
    for n in range(own + 1, own + others + 1):
        node.registry.register(Registration(InstanceInfo("OTHER", f"INST{n:05d}",
                                                         tcp=10_000 + n), nodeId=2))
    return node


def metrics_scrape(settings: Settings) -> dict[str, Any]:
    """One scrape of a node with 10,000 registrations: collect and render, in ms."""
    scrapes = 20 if settings.quick else 200
    cases = {
        f"{REGISTRATIONS:,} own instances": _node(REGISTRATIONS, 0),
        f"{MAX_INSTANCE_SERIES} own + {REGISTRATIONS - MAX_INSTANCE_SERIES:,} of another node":
            _node(MAX_INSTANCE_SERIES, REGISTRATIONS - MAX_INSTANCE_SERIES),
    }
    results: dict[str, Any] = {}
    rows = []
    for name, node in cases.items():
        registry = nodeRegistry(node)
        size = len(generate_latest(registry))  # and warm up
        times = []
        for _ in range(scrapes):
            began = time.perf_counter()
            generate_latest(registry)
            times.append(time.perf_counter() - began)
        stats = summary(times)
        results[name] = stats | {"bytes": size}
        rows.append([name, str(len(node.registry.registrations())), str(size),
                     ms(stats["median"]), ms(stats["p90"]), ms(stats["max"]),
                     verdict(stats["max"] < SCRAPE_TARGET)])
        node.stopService()
    print(formatTable(["NODE", "REGISTRATIONS", "BYTES", "MEDIAN ms", "P90 ms", "MAX ms",
                       f"MAX < {SCRAPE_TARGET * 1000:.0f} ms"], rows))
    return {"cases": results, "target_s": SCRAPE_TARGET, "scrapes": scrapes}


class Scraper:
    """Scrapes C{url} every C{interval} seconds from a thread until stopped."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with urllib.request.urlopen(self.url, timeout=5) as response:
                response.read()
            self.scrapes += 1
            self._stop.wait(self.interval)
