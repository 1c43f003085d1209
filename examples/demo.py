"""
`make demo`: the whole invention on loopback.

Three srp nodes (examples/echo_node.py) form one cluster on a free
127.0.0.N address; each also serves the instance ECHO, with priorities
0 (A, the primary), 1 (B, a standby, started first so that it is the
cluster's active) and 2 (C).  A client streams numbered requests to
``srp:ADDRESS/ECHO`` through a FailoverClient.  The demo then kills the
primary (kill -9) and stops the active node gracefully (SIGTERM), and
prints a timeline: who answered, each fail-over's gap in milliseconds, and
how many requests were lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import deferLater, react

from srp.client.failover import FailoverClient
from srp.testing.load import LineRequester
from srp.testing.processes import NodeProcess, freeLoopbackAddress

HERE = Path(__file__).parent


def srp(*arguments: str) -> None:
    """Run an srp command and show it."""
    print(f"\n$ srp {' '.join(arguments)}", flush=True)
    result = subprocess.run([str(Path(sys.executable).with_name("srp")), *arguments],
                            capture_output=True, text=True)
    print((result.stdout + result.stderr).rstrip(), flush=True)


class Timeline:
    """Events, stamped in milliseconds since the start."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.start = reactor.seconds()

    def __call__(self, what: str, at: float | None = None) -> None:
        when = self.reactor.seconds() if at is None else at
        print(f"{(when - self.start) * 1000:8.0f} ms  {what}", flush=True)


async def main(reactor: Any, scratch: Path) -> None:
    address = freeLoopbackAddress()
    nodes: dict[str, NodeProcess] = {}

    def start(name: str, priority: int) -> NodeProcess:
        node = NodeProcess(scratch / f"{name}.toml", scratch / f"{name}.log", argv=[
            sys.executable, str(HERE / "echo_node.py"), "--listen", address, "--name", name,
            "--priority", str(priority), "--instance", "ECHO", "--cluster", "demo"]).start()
        nodes[name] = node
        return node

    try:
        print(f"Starting a cluster of three nodes on {address}:1434 "
              "(B first, so that it is the active)", flush=True)
        start("B", 1)
        await deferLater(reactor, 0.6, lambda: None)
        start("A", 0)
        start("C", 2)
        await deferLater(reactor, 1.0, lambda: None)
        srp("status", "--cluster", "demo", address)
        srp("resolve", f"{address}\\ECHO")

        endpoint = clientFromString(reactor, f"srp:{address}/ECHO:cluster=demo:verify=hello")
        requester = LineRequester(reactor, rate=100)
        client = FailoverClient(reactor, endpoint, requester)
        log = Timeline(reactor)
        print("\nTimeline (a request every 10 ms through srp:"
              f"{address}/ECHO, resent if unanswered after 200 ms):", flush=True)
        await client.connect()
        log(f"connected to {client.peer} over {endpoint.connectedTo[0]}")
        await deferLater(reactor, 1.0, lambda: None)
        log(f"answers so far from {', '.join(requester.servers())}")

        seen = 0

        def failovers() -> None:
            nonlocal seen
            for (lostAt, gap), (_, peer) in list(zip(client.gaps, requester.failovers,
                                                     strict=False))[seen:]:
                log("connection lost", lostAt)
                log(f"failed over to {peer} over {endpoint.connectedTo[0]}: "
                    f"a gap of {gap * 1000:.0f} ms", lostAt + gap)
                seen += 1

        os.kill(nodes["A"].pid, signal.SIGKILL)
        log("kill -9 of node A, the primary")
        await deferLater(reactor, 2.0, failovers)
        os.kill(nodes["B"].pid, signal.SIGTERM)
        log("SIGTERM to node B, the cluster's active and now the server: graceful stop")
        await deferLater(reactor, 2.0, failovers)
        requester.stop()
        await deferLater(reactor, 0.5, lambda: None)
        lost = requester.unanswered()
        sawLoss = requester.lost is not None
        log(f"{len(requester.sent)} requests sent, {len(requester.answers)} answered, "
            f"{len(lost)} lost; answered by {' -> '.join(requester.servers())}; the "
            f"application saw {'a' if sawLoss else 'no'} connectionLost")
        await client.close()
        srp("status", "--cluster", "demo", address)
        if lost or sawLoss or requester.servers() != ["A", "B", "C"]:
            raise SystemExit("demo: the fail-over did not go as it should; see the node logs "
                             f"in {scratch}")
    finally:
        for node in nodes.values():
            node.stop()


if __name__ == "__main__":
    scratch = Path(tempfile.mkdtemp(prefix="srp-demo-"))
    try:
        react(lambda reactor: Deferred.fromCoroutine(main(reactor, scratch)))
    except SystemExit as exit:
        if not exit.code:  # kept on failure: the message names the node logs there
            shutil.rmtree(scratch, ignore_errors=True)
        raise
