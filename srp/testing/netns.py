"""
Hosts on a private LAN for multi-host tests: Linux network namespaces.

Each host is a namespace with an C{eth0} address in 10.231.0.0/24, all
joined by a bridge in a switch namespace; a default route lets limited
broadcast (255.255.255.255) out.  Nothing leaves the namespaces the test
created.  A host can be cut off the LAN and put back (a partition).
Needs root (CI runs as root).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from attrs import frozen

SUBNET = "10.231.0"
#: setns(2)'s flag for a network namespace.
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


@frozen
class Host:
    """One namespace: its name, its address on the LAN, and its port on the switch."""

    namespace: str
    address: str
    switch: str = ""
    port: str = ""

    def command(self, *argv: str) -> list[str]:
        """C{argv} run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def inside(self, function: Callable[[], T]) -> T:
        """
        C{function()}, called in this host's network: in a thread of its own
        that entered the host's namespace.  Sockets it opens stay there, so
        the test can use them from any thread.
        """
        def entered() -> T:
            with open(f"/var/run/netns/{self.namespace}") as handle:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"cannot enter {self.namespace}")
            return function()

        with ThreadPoolExecutor(1) as thread:
            return thread.submit(entered).result()

    def cut(self) -> None:
        """Cut this host off the LAN (a partition): its switch port goes down."""
        _ip("-n", self.switch, "link", "set", self.port, "down")

    def mend(self) -> None:
        """Put this host back on the LAN."""
        _ip("-n", self.switch, "link", "set", self.port, "up")


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


def _remove(namespace: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in pids.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@contextmanager
def lan(count: int) -> Iterator[Sequence[Host]]:
    """C{count} hosts on one bridge; every process left in them is killed on exit."""
    assert os.geteuid() == 0, "multi-host tests create network namespaces and need root"
    prefix = f"srp{os.getpid()}"
    switch = f"{prefix}sw"
    hosts = [Host(f"{prefix}h{n}", f"{SUBNET}.{n + 1}", switch, f"port{n}")
             for n in range(count)]
    try:
        _ip("netns", "add", switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for n, host in enumerate(hosts):
            _ip("netns", "add", host.namespace)
            _ip("-n", host.namespace, "link", "set", "lo", "up")
            _ip("-n", host.namespace, "link", "add", "eth0", "type", "veth",
                "peer", "name", f"port{n}", "netns", switch)
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "brd", "+",
                "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "route", "add", "default", "dev", "eth0")
            _ip("-n", switch, "link", "set", f"port{n}", "master", "br0", "up")
        yield hosts
    finally:
        for host in hosts:
            _remove(host.namespace)
        _remove(switch)
