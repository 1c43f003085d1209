"""
A reflection flood on loopback: many spoofed-looking 127.x.y.z sources send
CLNT_BCAST_EX for five seconds, while a normal client asks 10 times a
second.  The node's reply bandwidth stays within its budgets, the normal
client is answered, and the node's memory stays bounded.

The flood is paced at L{RATE}: forty times the requests the reply budgets
answer, but below what one node process reads on a loaded two-core machine.
A flood that saturates the node's CPU makes the kernel drop datagrams at
random, a normal client's among them, before srp sees any: that is out of
srp's reach (docs/security.md, "Threat model").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from srp.server.limits import DEFAULT_GLOBAL, DEFAULT_RESERVE
from srp.testing.load import RequestStream
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire import InstanceRequest
from tests.conftest import srp

SECONDS = 5.0
SOURCES = 256
#: Flood datagrams a second.
RATE = int(os.environ.get("SRP_FLOOD_RATE", "100000"))


def rss(pid: int) -> int:
    """Resident memory of process C{pid}, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_flood_is_held_to_the_budget_and_a_normal_client_is_answered(tmp_path: Path) -> None:
    instances = [{"name": f"INSTANCE{n:02d}", "tcp": 50000 + n,
                  "np": f"\\\\SRPTEST\\pipe\\MSSQL$INSTANCE{n:02d}\\sql\\query"}
                 for n in range(20)]
    config = writeNodeConfig(tmp_path / "node.toml", [freeLoopbackAddress()], instances)
    with NodeProcess(config, tmp_path / "node.log") as node:
        enumeration = len(RequestStream((node.address, 1434), b"\x03").run(0.05)[0].reply
                          or b"")
        assert enumeration > 1000
        before = rss(node.pid)
        flooder = subprocess.Popen(
            [sys.executable, "-m", "tests.flood", node.address, str(SECONDS), str(SOURCES),
             str(RATE)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
        try:
            # A normal client, which resends an unanswered request every 200 ms
            # for a second, as FreeTDS and tedious do.
            normal = RequestStream((node.address, 1434), InstanceRequest("INSTANCE07").encode(),
                                   rate=10, timeout=1.0, resend=0.2).run(SECONDS)
            flood = json.loads(flooder.communicate(timeout=SECONDS + 30)[0])
        finally:
            if flooder.poll() is None:
                flooder.kill()
                flooder.wait()
        after = rss(node.pid)
        status = json.loads(srp("status", "--json", node.address).stdout)
    answered = sum(1 for e in normal if e.answeredAt is not None)
    counters = status["counters"]
    floodReplies = counters["answered"] - answered - 1
    replyRate = floodReplies * enumeration / flood["seconds"]
    budget = (DEFAULT_GLOBAL.rate + DEFAULT_RESERVE.rate
              + (DEFAULT_GLOBAL.burst + DEFAULT_RESERVE.burst) / flood["seconds"])
    amplification = floodReplies * enumeration / flood["bytes"]
    print(f"\nflood: {flood['datagrams']} requests from {SOURCES} sources in "
          f"{flood['seconds']:.1f} s ({flood['datagrams'] / flood['seconds']:.0f}/s); "
          f"{floodReplies} replies of {enumeration} bytes = {replyRate / 2**20:.2f} MiB/s "
          f"(budget {budget / 2**20:.2f} MiB/s); amplification {amplification:.2f}x; "
          f"normal client {answered}/{len(normal)} answered; "
          f"node memory {before / 2**20:.1f} -> {after / 2**20:.1f} MiB; "
          f"limited {counters.get('limited', '?')}; node read "
          f"{(counters['answered'] + counters['limited']) / flood['datagrams']:.0%} of the flood")
    assert flood["datagrams"] > 10 * floodReplies, "the flood was not a flood"
    assert replyRate <= budget * 1.05
    assert answered >= 0.99 * len(normal)
    assert after - before < 64 * 2**20
