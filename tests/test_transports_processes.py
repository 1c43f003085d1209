"""
Each transport end to end through `srp:cluster/instance` with real node
processes: via, tcp and np served by a node, fallback when the preferred
transport's listener is down, via path fail-over, and relays declared in a
node's configuration.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from srp.client.endpoint import SRPClientEndpoint
from srp.client.resolver import ClusterResolver
from srp.client.verifiers import HelloVerifier
from srp.server.hello import HelloFactory
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.transports import via
from tests.conftest import srp
from tests.test_verifiers import Recorder, close, echoFactory, portOf

ECHO_NODE = Path(__file__).parent.parent / "examples" / "echo_node.py"


def closedPort(host: str) -> int:
    """A TCP port on C{host} that nothing listens on."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class TransportTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.address = freeLoopbackAddress()
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def start(self, process: NodeProcess) -> NodeProcess:
        process.start()
        self.addCleanup(process.stop)
        return process

    async def connect(self, instance: str, **kw: Any) -> tuple[SRPClientEndpoint, Recorder]:
        endpoint = SRPClientEndpoint(reactor, self.address, instance,
                                     ClusterResolver(reactor, clusterName=kw.pop("cluster",
                                                                                   "srp")),
                                     verifier=HelloVerifier(reactor), **kw)
        app = await endpoint.connect(Factory.forProtocol(Recorder))
        assert isinstance(app, Recorder)
        self.addCleanup(close, app)
        return endpoint, app

    async def roundTrip(self, app: Recorder, data: bytes) -> bytes:
        app.transport.write(data)  # type: ignore[union-attr]
        return await app.arrived

    async def test_each_transport_of_a_node_that_serves_them(self) -> None:
        self.start(NodeProcess(self.directory / "x.toml", self.directory / "node.log", argv=[
            sys.executable, str(ECHO_NODE), "--listen", self.address, "--name", "A"]))
        for prefer in (("via", "tcp", "np"), ("tcp",), ("np",)):
            endpoint, app = await self.connect("ECHO", prefer=prefer, cluster="demo")
            assert endpoint.connectedTo is not None
            self.assertEqual(endpoint.connectedTo[0], prefer[0])
            self.assertEqual(await self.roundTrip(app, b"1\n"), b"A 1\n")

    async def test_fallback_when_the_preferred_listener_is_down(self) -> None:
        live = reactor.listenTCP(0, HelloFactory(echoFactory(), ["SALES"]),
                                 interface=self.address)
        self.addCleanup(live.stopListening)
        config = writeNodeConfig(self.directory / "node.toml", [self.address], [
            {"name": "SALES", "tcp": portOf(live),
             "via": f"H,{self.address}:{closedPort(self.address)}"}])
        self.start(NodeProcess(config, self.directory / "node.log"))
        endpoint, app = await self.connect("SALES")
        assert endpoint.connectedTo is not None
        self.assertEqual(endpoint.connectedTo[0], "tcp")
        self.assertEqual(await self.roundTrip(app, b"ping"), b"ping")

    async def test_via_path_fail_over(self) -> None:
        live = await via.VIAServerEndpoint(reactor, 0, interface=self.address).listen(
            HelloFactory(echoFactory(), ["SALES"]))
        self.addCleanup(live.stopListening)
        paths = f"{self.address}:{closedPort(self.address)},{self.address}:{portOf(live)}"
        config = writeNodeConfig(self.directory / "node.toml", [self.address], [
            {"name": "SALES", "via": f"H,{paths}"}])
        self.start(NodeProcess(config, self.directory / "node.log"))
        endpoint, app = await self.connect("SALES")
        assert endpoint.connectedTo is not None
        self.assertEqual(endpoint.connectedTo[0], "via")
        self.assertEqual(await self.roundTrip(app, b"via the second NIC"),
                         b"via the second NIC")

    async def test_relays_declared_in_the_configuration(self) -> None:
        backend = reactor.listenTCP(0, echoFactory(), interface="127.0.0.1")
        self.addCleanup(backend.stopListening)
        pipes = tempfile.mkdtemp(prefix="srp")  # short: AF_UNIX paths are short
        self.addCleanup(shutil.rmtree, pipes, True)
        config = writeNodeConfig(self.directory / "node.toml", [self.address], [
            {"name": "SALES", "relay": f"127.0.0.1:{portOf(backend)}",
             "serve": ["via", "tcp", "np"]}], node={"pipe_directory": pipes})
        self.start(NodeProcess(config, self.directory / "node.log"))
        [place] = json.loads(srp("resolve", "--json", f"{self.address}\\SALES").stdout)
        self.assertNotEqual(place["tcp"], portOf(backend), "srp listens on a port of its own")
        self.assertIn("\\pipe\\MSSQL$SALES\\srp-", place["np"])
        self.assertEqual(place["via"]["addresses"][0]["nic"], self.address)
        _endpoint, app = await self.connect("SALES", prefer=("via",))
        self.assertEqual(await self.roundTrip(app, b"relayed"), b"relayed")


def test_a_listener_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = writeNodeConfig(tmp_path / "node.toml", [freeLoopbackAddress()], [
        {"name": "SALES", "relay": "127.0.0.1:1433", "serve": ["np"]}],
        node={"pipe_directory": str(blocker / "pipes")})
    result = srp("serve", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith("srp: instance SALES: cannot listen on np: ")
    assert len(result.stderr.splitlines()) == 1
