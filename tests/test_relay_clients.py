"""
Real SQL Server drivers through a node's relay: they resolve the instance
through the node, connect to the port the relay listens on and speak first
(PRELOGIN); the relay holds those bytes until its backend connection is up.

The backend answers PRELOGIN as SQL Server does (without encryption), then
records the type of the next packet: a LOGIN7 (C{0x10}) proves that the
answer reached the driver through the relay and that it carried on.  And
srp's own endpoint, with a protocol that writes first, through a relay's
via, tcp and np listeners.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytds
import pytest
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from srp.client.endpoint import SRPClientEndpoint
from srp.client.resolver import ClusterResolver
from srp.client.verifiers import NoVerifier
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire.tds import PRELOGIN, decodePrelogin, packetLength, preloginResponse
from tests.test_real_clients import tsqlPath
from tests.test_verifiers import Recorder, close, echoFactory, portOf

LOGIN7 = 0x10
TIMEOUT = 5.0


class PreloginBackend:
    """A TCP server on loopback: answers each connection's PRELOGIN, records what follows."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((host, 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        #: Per connection: the packet types received, in order.
        self.packets: list[list[int]] = []
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(TIMEOUT)
                seen: list[int] = []
                self.packets.append(seen)
                try:
                    request = self._packet(connection)
                    seen.append(request[0])
                    decodePrelogin(request, PRELOGIN)
                    connection.sendall(preloginResponse(True))
                    seen.append(self._packet(connection)[0])
                except (OSError, ValueError):
                    pass

    @staticmethod
    def _packet(connection: socket.socket) -> bytes:
        data = b""
        while len(data) < 8 or len(data) < packetLength(data):
            chunk = connection.recv(65536)
            if not chunk:
                raise ValueError("closed")
            data += chunk
        return data

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        self.listener.close()


@pytest.fixture
def relayNode(tmp_path: Path) -> Iterator[tuple[NodeProcess, PreloginBackend]]:
    backend = PreloginBackend()
    config = writeNodeConfig(tmp_path / "node.toml", [freeLoopbackAddress()], [
        {"name": "SALES", "relay": f"127.0.0.1:{backend.port}", "serve": ["tcp"]}])
    try:
        with NodeProcess(config, tmp_path / "node.log") as node:
            yield node, backend
    finally:
        backend.close()


def test_pytds_through_a_relay(relayNode: tuple[NodeProcess, PreloginBackend]) -> None:
    node, backend = relayNode
    with pytest.raises((pytds.Error, OSError)):
        pytds.connect(dsn=f"{node.address}\\sales", user="x", password="y",
                      login_timeout=TIMEOUT, timeout=TIMEOUT)
    # The node's health checks connect too, and send nothing.
    assert [p for p in backend.packets if p] == [[PRELOGIN, LOGIN7]], node.log()
    assert "Traceback" not in node.log()


def test_tsql_through_a_relay(relayNode: tuple[NodeProcess, PreloginBackend],
                              tmp_path: Path) -> None:
    node, backend = relayNode
    conf = tmp_path / "freetds.conf"
    conf.write_text("[global]\n")
    subprocess.run([tsqlPath(), "-S", f"{node.address}\\SALES", "-U", "x", "-P", "y"],
                   env={**os.environ, "TDSVER": "7.4", "FREETDSCONF": str(conf)},
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert [p for p in backend.packets if p][:1] == [[PRELOGIN, LOGIN7]], node.log()
    assert "Traceback" not in node.log()


class SpeaksFirst(Recorder):
    """A client protocol that writes before it has read anything, as TDS clients do."""

    def connectionMade(self) -> None:
        self.transport.write(b"client speaks first")  # type: ignore[union-attr]


class ClientFirstOnEveryTransport(TestCase):
    timeout = 60

    async def test_client_first_bytes_cross_each_transport_of_a_relay(self) -> None:
        backend = reactor.listenTCP(0, echoFactory(), interface="127.0.0.1")
        self.addCleanup(backend.stopListening)
        address = freeLoopbackAddress()
        directory = Path(self.mktemp())
        directory.mkdir()
        # The default pipe directory, which the client knows too.
        config = writeNodeConfig(directory / "node.toml", [address], [
            {"name": "SALES", "relay": f"127.0.0.1:{portOf(backend)}",
             "serve": ["via", "tcp", "np"]}])
        node = NodeProcess(config, directory / "node.log").start()
        self.addCleanup(node.stop)
        for transport in ("via", "tcp", "np"):
            endpoint = SRPClientEndpoint(reactor, address, "SALES", ClusterResolver(reactor),
                                         prefer=(transport,), verifier=NoVerifier())
            app = await endpoint.connect(Factory.forProtocol(SpeaksFirst))
            assert isinstance(app, SpeaksFirst)
            self.addCleanup(close, app)
            assert endpoint.connectedTo is not None
            self.assertEqual(endpoint.connectedTo[0], transport)
            self.assertEqual(await app.arrived, b"client speaks first")
        self.assertNotIn("Traceback", node.log())
