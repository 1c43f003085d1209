"""Named pipes on POSIX: names, socket paths, permissions, and srp: over np."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from srp.client.endpoint import SRPClientEndpoint
from srp.client.resolver import ClusterResolver
from srp.client.verifiers import HelloVerifier
from srp.records import InstanceInfo, Registration
from srp.server.config import NodeConfig
from srp.server.hello import HelloFactory
from srp.server.node import NodeService
from srp.testing.processes import freeLoopbackAddress
from srp.transports import np
from srp.transports.writethrough import WriteThroughProtocol
from tests.test_verifiers import Recorder, close, echoFactory


def test_pipe_names() -> None:
    assert np.splitPipeName("\\\\DB1\\pipe\\MSSQL$SALES\\sql\\query") == (
        "DB1", "MSSQL$SALES\\sql\\query")
    assert np.pipeName("DB1", "sql\\query") == "\\\\DB1\\pipe\\sql\\query"
    for bad in ("DB1\\pipe\\x", "\\\\DB1\\pipes\\x", "\\\\DB1\\pipe\\", "x"):
        with pytest.raises(ValueError, match="not a pipe name"):
            np.splitPipeName(bad)


def test_socket_path_is_one_file_and_short(tmp_path: Path) -> None:
    path = np.socketPath("MSSQL$SALES\\sql\\query", tmp_path)
    assert path.parent == tmp_path and path.name == "MSSQL%24SALES%5Csql%5Cquery"
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        np.socketPath("x" * 120, tmp_path)


def test_a_pipe_on_another_host_is_refused() -> None:
    info = InstanceInfo("OTHER", "SALES", np="\\\\OTHERHOST\\pipe\\sql\\query")
    endpoint = np.endpointFor(reactor, "192.0.2.7", info, 1.0)
    assert isinstance(endpoint, np.RemotePipeEndpoint)
    failure = endpoint.connect(Factory())
    errors: list[str] = []
    failure.addErrback(lambda f: errors.append(str(f.value)))
    assert "named pipes do not cross hosts on POSIX" in errors[0]
    assert np.endpointFor(reactor, "192.0.2.7", InstanceInfo("O", "S", tcp=1), 1.0) is None


class PipeTests(TestCase):
    async def test_srp_endpoint_over_np_with_hello(self) -> None:
        directory = Path(self.mktemp())
        self.patch(np, "defaultDirectory", lambda: directory)
        listener = np.listenPipe(reactor, "MSSQL$SALES\\sql\\query",
                                 HelloFactory(echoFactory(), ["SALES"]), directory)
        self.addCleanup(listener.stopListening)
        socketFile = np.socketPath("MSSQL$SALES\\sql\\query", directory)
        self.assertEqual(stat.S_IMODE(socketFile.stat().st_mode), 0o660)
        self.assertEqual(stat.S_IMODE(directory.stat().st_mode), 0o750)
        address = freeLoopbackAddress()
        node = NodeService(NodeConfig(listen=(address,), instances=(Registration(InstanceInfo(
            "DB1", "SALES", np="\\\\DB1\\pipe\\MSSQL$SALES\\sql\\query", tcp=1)),)), reactor)
        node.privilegedStartService()
        node.startService()
        self.addCleanup(node.stopService)
        endpoint = SRPClientEndpoint(reactor, address, "SALES", ClusterResolver(reactor),
                                     prefer=("np", "tcp"), verifier=HelloVerifier(reactor))
        app = await endpoint.connect(Factory.forProtocol(Recorder))
        assert endpoint.connectedTo is not None
        self.assertEqual(endpoint.connectedTo[0], "np")
        app.transport.write(b"over a pipe")  # type: ignore[attr-defined]
        self.assertEqual(await app.arrived, b"over a pipe")  # type: ignore[attr-defined]
        transport = app.transport  # type: ignore[attr-defined]
        self.assertIsInstance(transport, WriteThroughProtocol, "writes go through at once")
        self.assertGreaterEqual(transport.getHandle().getsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF), np.SEND_BUFFER)
        close(app)


def test_np_endpoint_strings(tmp_path: Path) -> None:
    from twisted.internet.endpoints import clientFromString

    endpoint = clientFromString(reactor, f"np:MSSQL$SALES\\\\sql\\\\query:directory={tmp_path}")
    assert isinstance(endpoint, np.PipeEndpoint)
    assert endpoint.path == tmp_path / "MSSQL%24SALES%5Csql%5Cquery"
    remote = clientFromString(reactor, "np:\\\\\\\\FARAWAY\\\\pipe\\\\sql\\\\query")
    assert isinstance(remote, np.RemotePipeEndpoint)
    with pytest.raises(ValueError, match="no option 'mode'"):
        clientFromString(reactor, "np:x:mode=1")
