"""
A spoofed-looking flood on loopback: CLNT_BCAST_EX from many 127.x.y.z
source addresses, at a given rate (or as fast as one process can), for a
bounded time.

    python -m tests.flood TARGET_ADDRESS SECONDS SOURCES [RATE]

Prints JSON: datagrams and bytes sent.  Replies are not read: a reflection
attack's victim would not ask for them either.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def flood(target: str, seconds: float, sources: int, rate: float = 0) -> dict[str, float]:
    """
    Send CLNT_BCAST_EX from C{sources} addresses for C{seconds}, C{rate}
    datagrams a second at most (0: no limit); return what was sent.
    """
    sockets = []
    for n in range(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((f"127.{100 + n // 250}.{n % 250}.1", 0))
        sock.setblocking(False)
        sockets.append(sock)
    request = b"\x02"
    sent = 0
    start = time.monotonic()
    deadline = start + seconds
    try:
        while (now := time.monotonic()) < deadline:
            if rate and sent > (now - start) * rate:
                time.sleep(0.0005)
                continue
            for sock in sockets:
                try:
                    sock.sendto(request, (target, 1434))
                    sent += 1
                except BlockingIOError:
                    pass
    finally:
        for sock in sockets:
            sock.close()
    elapsed = time.monotonic() - start
    return {"datagrams": sent, "bytes": sent * len(request), "seconds": elapsed}


if __name__ == "__main__":
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0
    print(json.dumps(flood(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), rate)))
