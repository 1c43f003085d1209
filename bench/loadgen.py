"""
A UDP load generator for [MC-SQLR] responders, run as its own process.

It keeps a window of C{--window} CLNT_UCAST_INST requests (C{04} and an
instance name, chosen at random among C{--instances} names
C{INST00001}...) outstanding against one server, sends a new request for
every reply, and re-sends a request that got no reply within C{--timeout}
seconds (counting it as lost).  Replies are counted, not matched: the
baseline responder answers every request with the same canned datagram, so
the oldest outstanding request is taken as the one answered (loopback keeps
order).  Only replies received after C{--warmup} seconds and within the
following C{--seconds} count.

It uses plain non-blocking sockets and C{select.poll}, so that it costs
the servers under test as little CPU as one Python process can, and prints
one JSON object on stdout::

    python -m bench.loadgen --target 127.0.0.2:1434 --seconds 5
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import select
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

CLNT_UCAST_INST = 0x04
SVR_RESP = 0x05


def instanceName(n: int) -> str:
    """The name of the C{n}th benchmark instance (1-based): C{INST00001}, ..."""
    return f"INST{n:05d}"


def instanceRequest(name: str) -> bytes:
    """The CLNT_UCAST_INST datagram asking for C{name}."""
    return bytes([CLNT_UCAST_INST]) + name.encode("ascii") + b"\0"


def cpuSeconds(pid: int | None) -> float | None:
    """User plus system CPU seconds process C{pid} has used, from /proc; None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processTime() -> float:
    """User plus system CPU seconds this process has used."""
    times = os.times()
    return times.user + times.system


def parseTarget(text: str) -> tuple[str, int]:
    """Split C{HOST:PORT}; the host must be a loopback (127.0.0.0/8) address."""
    host, _, port = text.rpartition(":")
    if not host.startswith("127."):
        raise argparse.ArgumentTypeError(f"{text!r}: only 127.0.0.0/8 targets are allowed")
    return host, int(port)


def generate(
    target: tuple[str, int],
    requests: Sequence[bytes],
    window: int,
    seconds: float,
    warmup: float = 0.5,
    timeout: float = 0.5,
    seed: int = 1434,
    serverPid: int | None = None,
) -> dict[str, Any]:
    """
    Load C{target} with C{window} outstanding requests for C{warmup + seconds}.

    @return: the counts of the measured period (after C{warmup}): requests
        C{sent}, C{replies} received, requests C{lost} (re-sent after
        C{timeout}), C{seconds} measured and C{replies_per_s}.
    """
    rng = random.Random(seed)
    # Random requests, drawn up front so that the loop only indexes a list.
    sequence = [rng.choice(requests) for _ in range(65536)]
    mask = len(sequence) - 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.connect(target)
        sock.setblocking(False)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        send, recv, now = sock.send, sock.recv, time.perf_counter
        # (send time, datagram) of each outstanding request, oldest first.
        pending: collections.deque[tuple[float, bytes]] = collections.deque()
        index = sent = replies = lost = malformed = 0
        start = now()
        measuring = start + warmup
        end = measuring + seconds
        counted = False
        base = (0, 0, 0, 0)
        cpuBase: tuple[float, float | None] = (0.0, None)
        t = start
        while t < end:
            if not counted and t >= measuring:
                counted = True
                base = (sent, replies, lost, malformed)
                cpuBase = (processTime(), cpuSeconds(serverPid))
            while len(pending) < window:
                datagram = sequence[index & mask]
                index += 1
                try:
                    send(datagram)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                pending.append((t, datagram))
                sent += 1
            poller.poll(timeout * 1000 / 4)
            while True:
                try:
                    reply = recv(65535)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    # An ICMP port unreachable from a previous send.
                    continue
                if reply[:1] == b"\x05" and pending:
                    pending.popleft()
                    replies += 1
                else:
                    malformed += 1
            t = now()
            # Re-send what has had no reply within the timeout.
            while pending and pending[0][0] < t - timeout:
                _, datagram = pending.popleft()
                lost += 1
                try:
                    send(datagram)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                pending.append((t, datagram))
                sent += 1
        cpu, serverCpu = processTime(), cpuSeconds(serverPid)
        if not counted:
            base = (sent, replies, lost, malformed)
            cpuBase = (cpu, serverCpu)
        elapsed = t - max(measuring, start)
    finally:
        sock.close()
    measuredReplies = replies - base[1]
    return {
        "target": f"{target[0]}:{target[1]}",
        "window": window,
        "seconds": round(elapsed, 3),
        "sent": sent - base[0],
        "replies": measuredReplies,
        "lost": lost - base[2],
        "unexpected": malformed - base[3],
        "replies_per_s": measuredReplies / elapsed if elapsed > 0 else 0.0,
        "cpu_s": round(cpu - cpuBase[0], 3),
        "server_cpu_s": (None if serverCpu is None or cpuBase[1] is None
                         else round(serverCpu - cpuBase[1], 3)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run L{generate} and print its result as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--target", type=parseTarget, required=True, help="HOST:PORT (loopback)")
    parser.add_argument("--instances", type=int, default=10_000,
                        help="ask for INST00001 .. INST<N> (default 10000)")
    parser.add_argument("--window", type=int, default=64, help="outstanding requests")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured lead-in")
    parser.add_argument("--timeout", type=float, default=0.5,
                        help="seconds before a request counts as lost and is re-sent")
    parser.add_argument("--seed", type=int, default=1434)
    parser.add_argument("--server-pid", type=int, default=None,
                        help="also report the CPU time this process uses meanwhile")
    options = parser.parse_args(argv)
    requests = [instanceRequest(instanceName(n)) for n in range(1, options.instances + 1)]
    result = generate(options.target, requests, options.window, options.seconds,
                      options.warmup, options.timeout, options.seed, options.server_pid)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
