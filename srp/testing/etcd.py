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
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from srp.etcd.client import encode, prefixEnd
from srp.testing.certs import PKI
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
                 cluster: EtcdCluster | None = None, place: Host | None = None) -> None:
        self.name = name
        self.cluster = cluster
        self.place = place
        self.tls = None if cluster is None else cluster.tls
        scheme = "http" if self.tls is None else "https"
        self.clientURL = f"{scheme}://{host}:{self._here(lambda: freePort(host))}"
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
        if self.tls is not None:
            command += ["--cert-file", str(self.tls.server.cert),
                        "--key-file", str(self.tls.server.key),
                        "--trusted-ca-file", str(self.tls.ca.cert), "--client-cert-auth"]
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
            self._here(lambda: self.post("/v3/kv/range", {"key": "AA=="}, timeout=1.0))
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True

    def _here(self, function: Callable[[], T]) -> T:
        return function() if self.place is None else self.place.inside(function)

    def post(self, path: str, body: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        """L{post} to this member, over TLS and as root when its cluster asks for them."""
        root = None if self.cluster is None else self.cluster.root
        headers = {}
        if root is not None:
            token = post(self.clientURL, "/v3/auth/authenticate",
                         {"name": "root", "password": root}, timeout, self.tls)["token"]
            headers["Authorization"] = token
        return post(self.clientURL, path, body, timeout, self.tls, headers)


def post(url: str, path: str, body: dict[str, Any], timeout: float = 2.0,
         tls: PKI | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """
    POST C{body} as JSON to C{url}C{path} (etcd's JSON gateway), over TLS
    with C{tls}' CA and client certificate; its JSON answer.
    """
    context = None
    if tls is not None:
        context = ssl.create_default_context(cafile=str(tls.ca.cert))
        context.load_cert_chain(str(tls.client.cert), str(tls.client.key))
    request = urllib.request.Request(url + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"} | (headers or {}))
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


class EtcdCluster:
    """
    A real etcd cluster of C{size} members on C{host}, or one member on each
    of C{hosts} (namespace hosts, at their LAN address), for tests: each
    member on free ports, data under a temporary directory removed by L{stop}.

    With C{tls} (see L{srp.testing.certs.makePKI}), members serve C{https://}
    with its server certificate and take only clients with a certificate its
    CA signed.  Use it as a context manager, or call L{start} and L{stop}.
    """

    def __init__(self, size: int = 3, host: str = "127.0.0.1",
                 directory: Path | None = None, hosts: Sequence[Host] = (),
                 tls: PKI | None = None) -> None:
        self._temporary = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="srp-etcd-")) if directory is None \
            else directory
        self.tls = tls
        #: root's password once L{enableAuth} turned etcd's authentication on.
        self.root: str | None = None
        self.members = [EtcdMember(f"m{n}", place.address, self.directory, self, place)
                        for n, place in enumerate(hosts)] or [
            EtcdMember(f"m{n}", host, self.directory, self) for n in range(size)]

    def enableAuth(self, root: str, users: Mapping[str, tuple[str, bytes]] | None = None) -> None:
        """
        Turn etcd's authentication on, with a C{root} user of password
        C{root}, and for each of C{users} (name: (password, prefix)) a role of
        its own that may read and write every key under the prefix.
        """
        member = self.members[0]
        for name, (password, prefix) in (users or {}).items():
            member.post("/v3/auth/role/add", {"name": name})
            member.post("/v3/auth/role/grant", {"name": name, "perm": {
                "permType": "READWRITE", "key": encode(prefix),
                "range_end": encode(prefixEnd(prefix))}})
            member.post("/v3/auth/user/add", {"name": name, "password": password})
            member.post("/v3/auth/user/grant", {"user": name, "role": name})
        member.post("/v3/auth/role/add", {"name": "root"})
        member.post("/v3/auth/user/add", {"name": "root", "password": root})
        member.post("/v3/auth/user/grant", {"user": "root", "role": "root"})
        member.post("/v3/auth/enable", {})
        self.root = root

    @property
    def endpoints(self) -> list[str]:
        """Every member's client URL, as a node's C{etcd} setting lists them."""
        return [m.clientURL for m in self.members]

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        """Start every member and wait until each answers; raise if one does not."""
        initial = ",".join(f"{m.name}={m.peerURL}" for m in self.members)
        for member in self.members:
            member.start(initial)
        return self._healthy(timeout)

    def revive(self, timeout: float = 20.0) -> EtcdCluster:
        """
        Start again, on their data, the members that are not running (after
        C{kill}); wait until every member answers.
        """
        for member in self.members:
            if not member.running:
                member.start(member.initialCluster)
        return self._healthy(timeout)

    def _healthy(self, timeout: float) -> EtcdCluster:
        """Wait until every member answers; if one does not, stop all and raise."""
        deadline = time.monotonic() + timeout
        for member in self.members:
            while not member.healthy():
                if not member.running or time.monotonic() > deadline:
                    log = member.logPath.read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"etcd member {member.name} did not start: {log}")
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
