"""
A real etcd for tests, demos and benchmarks: L{EtcdCluster} runs Debian's
C{etcd} (package C{etcd-server}) as one or three members on loopback, each
on ports of its own, or one member on each of several network-namespace
hosts (L{srp.testing.netns}), with data in a temporary directory, stopped
by PID.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from srp.testing.netns import Host
from srp.testing.processes import stopProcess

#: Raft timing short enough for leases of 1 s (etcd's shortest lease is
#: 1.5 election timeouts).
HEARTBEAT_MS = 25
ELECTION_MS = 250

T = TypeVar("T")


def freePort(host: str = "127.0.0.1") -> int:
    """A TCP port on C{host} that nobody holds right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EtcdMember:
    """
    One member of an L{EtcdCluster}: its name, URLs, data and process; on
    C{host}, an address of this machine, or of the namespace host C{place}.
    """

    def __init__(self, name: str, host: str, directory: Path,
                 place: Host | None = None) -> None:
        self.name = name
        self.place = place
        self.clientURL = f"http://{host}:{self._here(lambda: freePort(host))}"
        self.peerURL = f"http://{host}:{self._here(lambda: freePort(host))}"
        self.directory = directory
        self.logPath = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.initialCluster = ""

    def start(self, initialCluster: str, state: str = "new") -> None:
        """Start this member's C{etcd}."""
        self.initialCluster = initialCluster
        command = [
            shutil.which("etcd") or "/usr/bin/etcd", "--name", self.name,
            "--data-dir", str(self.directory / self.name),
            "--listen-client-urls", self.clientURL, "--advertise-client-urls", self.clientURL,
            "--listen-peer-urls", self.peerURL, "--initial-advertise-peer-urls", self.peerURL,
            "--initial-cluster", initialCluster, "--initial-cluster-state", state,
            "--initial-cluster-token", f"srp-{self.directory.name}",
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
        ]
        if self.place is not None:
            command = self.place.command(*command)
        with open(self.logPath, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def restart(self, timeout: float = 20.0) -> None:
        """Start this member again on its data (after L{kill}); wait until it answers."""
        self.start(self.initialCluster)
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not self.running or time.monotonic() > deadline:
                raise RuntimeError(f"etcd member {self.name} did not restart: "
                                   f"{self.logPath.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        """Whether this member's process is alive."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL this member (by its PID) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """End this member by its PID (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            stopProcess(self.process)

    def healthy(self) -> bool:
        """Whether this member answers a range request (it has a quorum)."""
        try:
            self._here(lambda: post(self.clientURL, "/v3/kv/range", {"key": "AA=="},
                                    timeout=1.0))
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True

    def _here(self, function: Callable[[], T]) -> T:
        return function() if self.place is None else self.place.inside(function)


def post(url: str, path: str, body: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    """POST C{body} as JSON to C{url}C{path} (etcd's JSON gateway); its JSON answer."""
    request = urllib.request.Request(url + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


class EtcdCluster:
    """
    A real etcd cluster of C{size} members on C{host}, or one member on each
    of C{hosts} (namespace hosts, at their LAN address), for tests: each
    member on free ports, data under a temporary directory removed by L{stop}.

    Use it as a context manager, or call L{start} and L{stop}.
    """

    def __init__(self, size: int = 3, host: str = "127.0.0.1",
                 directory: Path | None = None, hosts: Sequence[Host] = ()) -> None:
        self._temporary = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="srp-etcd-")) if directory is None \
            else directory
        self.members = [EtcdMember(f"m{n}", place.address, self.directory, place)
                        for n, place in enumerate(hosts)] or [
            EtcdMember(f"m{n}", host, self.directory) for n in range(size)]

    @property
    def endpoints(self) -> list[str]:
        """Every member's client URL, as a node's C{etcd} setting lists them."""
        return [m.clientURL for m in self.members]

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        """Start every member and wait until each answers; raise if one does not."""
        initial = ",".join(f"{m.name}={m.peerURL}" for m in self.members)
        for member in self.members:
            member.start(initial)
        deadline = time.monotonic() + timeout
        for member in self.members:
            while not member.healthy():
                if not member.running or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"etcd member {member.name} did not start: "
                                       f"{member.logPath.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop every member by its PID and remove the data (if it is ours)."""
        for member in self.members:
            member.stop()
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
