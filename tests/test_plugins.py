"""
Extension points: transports, verifiers and VI providers, srp's own and a
third party's, found the way Twisted finds endpoint parsers.

The third party's dropins are written to a temporary C{twisted/plugins}
directory and put on C{sys.path}; srp's code is not touched.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import clientFromString, connectProtocol, serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.plugin import IPlugin, pluginPackagePaths
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

import twisted.plugins
from srp.client.endpoint import SRPClientEndpoint
from srp.client.verifiers import HelloVerifier, NoVerifier, TDSVerifier, verifierNamed
from srp.interfaces import IInstanceVerifier, IPortMapTransport, IVIProvider, NodeListening
from srp.records import InstanceInfo, Registration, ViaAddress
from srp.server.config import ConfigError, NodeConfig, parseConfig
from srp.server.node import NodeService
from srp.testing.processes import freeLoopbackAddress
from srp.transports import endpointsFor, transportNamed, transportNames
from srp.transports.np import PipeTransport
from srp.transports.tcp import TCPTransport
from srp.transports.via import EmulatedVIProvider, VIAClientEndpoint, VIATransport, viProviderNamed
from tests.test_verifiers import Recorder, close, echoFactory, portOf

#: A transport srp has never heard of: TCP under another name, whose port
#: travels in the port map as C{plain;PORT;}.
PLAIN_TRANSPORT = '''
from attrs import evolve
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.interfaces import IPortMapTransport


@implementer(IPlugin, IPortMapTransport)
class PlainTransport:
    name = "plain"

    def endpointFor(self, reactor, host, info, timeout):
        port = dict(info.other).get(self.name)
        if port is None:
            return None
        return TCP4ClientEndpoint(reactor, host, int(port), timeout=timeout)

    def listen(self, reactor, info, factory, node):
        wanted = int(dict(info.other).get(self.name, 0))
        port = reactor.listenTCP(wanted, factory, interface=node.host)
        other = [entry for entry in info.other if entry[0] != self.name]
        other.append((self.name, str(port.getHost().port)))
        return port, evolve(info, other=tuple(other))


plain = PlainTransport()
'''

#: A verifier srp has never heard of: it trusts the place, and remembers
#: every instance it was asked to confirm.
AUDIT_VERIFIER = '''
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.interfaces import IInstanceVerifier


@implementer(IPlugin, IInstanceVerifier)
class AuditVerifier:
    name = "audit"

    def __init__(self):
        self.seen = []

    def connect(self, endpoint, factory, instance):
        self.seen.append(instance)
        return endpoint.connect(factory)

    def forReactor(self, reactor):
        return self


audit = AuditVerifier()
'''

#: A VI provider srp has never heard of: the emulated one under another
#: name, counting what it is asked to do.
TRACED_PROVIDER = '''
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.interfaces import IVIProvider
from srp.transports.via import EmulatedVIProvider


@implementer(IPlugin, IVIProvider)
class TracedProvider:
    name = "traced"

    def __init__(self):
        self.inner = EmulatedVIProvider(local=False)
        self.calls = []

    def connect(self, reactor, paths, factory, timeout):
        self.calls.append("connect")
        return self.inner.connect(reactor, paths, factory, timeout)

    def listen(self, reactor, port, factory, interface=""):
        self.calls.append("listen")
        return self.inner.listen(reactor, port, factory, interface)


traced = TracedProvider()
'''

DROPINS = {"mytransport": PLAIN_TRANSPORT, "myverifier": AUDIT_VERIFIER,
           "myprovider": TRACED_PROVIDER}


def writeDropins(root: Path) -> Path:
    """Lay the third party's dropins out under C{root/twisted/plugins}."""
    plugins = root / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    for name, source in DROPINS.items():
        (plugins / f"{name}.py").write_text(textwrap.dedent(source))
    return plugins


def installDropins(case: SynchronousTestCase) -> None:
    """
    Put the third party's dropins on C{sys.path} for the length of C{case}.

    C{twisted.plugins} computes its C{__path__} from C{sys.path} when it is
    first imported, as it was already; extend it the same way it does.
    """
    root = Path(case.mktemp()).absolute()
    writeDropins(root)
    case.patch(sys, "path", [str(root), *sys.path])
    added = [path for path in pluginPackagePaths(twisted.plugins.__name__)
             if path not in twisted.plugins.__path__]
    case.patch(twisted.plugins, "__path__", [*twisted.plugins.__path__, *added])
    for name in DROPINS:
        case.addCleanup(sys.modules.pop, f"{twisted.plugins.__name__}.{name}", None)


class ThirdPartyTests(TestCase):
    """A third party's dropins, used through srp without a change to srp."""

    timeout = 30

    def setUp(self) -> None:
        installDropins(self)

    async def test_a_transport_srp_has_never_heard_of(self) -> None:
        address = freeLoopbackAddress()
        node = NodeService(NodeConfig(listen=(address,), instances=(
            Registration(InstanceInfo("DB1", "SALES")),)), reactor)
        node.serve("SALES", echoFactory(), ("plain",))
        node.privilegedStartService()
        node.startService()
        self.addCleanup(node.stopService)

        endpoint = clientFromString(reactor, f"srp:{address}/SALES:prefer=plain:timeout=2")
        assert isinstance(endpoint, SRPClientEndpoint)
        app = await endpoint.connect(Factory.forProtocol(Recorder))
        self.addCleanup(close, app)
        assert endpoint.connectedTo is not None
        transport, candidate = endpoint.connectedTo
        self.assertEqual(transport, "plain")
        [(protocol, port)] = candidate.info.other
        self.assertEqual(protocol, "plain", "the entry travelled in the port map")
        self.assertEqual(int(port), app.transport.getPeer().port)  # type: ignore[attr-defined]
        app.transport.write(b"through a plugin")  # type: ignore[attr-defined]
        self.assertEqual(await app.arrived, b"through a plugin")  # type: ignore[attr-defined]

    async def test_a_verifier_srp_has_never_heard_of(self) -> None:
        address = freeLoopbackAddress()
        node = NodeService(NodeConfig(listen=(address,), instances=(
            Registration(InstanceInfo("DB1", "HR")),)), reactor)
        node.serve("HR", echoFactory(), ("tcp",))
        node.privilegedStartService()
        node.startService()
        self.addCleanup(node.stopService)
        endpoint = clientFromString(reactor, f"srp:{address}/HR:verify=audit:timeout=2")
        app = await endpoint.connect(Factory.forProtocol(Recorder))
        assert isinstance(app, Recorder)
        self.addCleanup(close, app)
        self.assertEqual(cast(Any, verifierNamed("audit", reactor)).seen, ["HR"])
        app.transport.write(b"audited")  # type: ignore[union-attr]
        self.assertEqual(await app.arrived, b"audited")

    async def test_a_vi_provider_srp_has_never_heard_of(self) -> None:
        server = await serverFromString(
            reactor, "via:0:interface=127.0.0.1:provider=traced").listen(echoFactory())
        self.addCleanup(server.stopListening)
        endpoint = clientFromString(
            reactor, f"via:127.0.0.1:{portOf(server)}:provider=traced:timeout=2")
        assert isinstance(endpoint, VIAClientEndpoint)
        app = Recorder()
        await connectProtocol(endpoint, app)
        self.addCleanup(close, app)
        app.transport.write(b"traced")  # type: ignore[union-attr]
        self.assertEqual(await app.arrived, b"traced")
        self.assertEqual(cast(Any, viProviderNamed("traced")).calls, ["listen", "connect"])

    def test_a_node_configuration_names_them(self) -> None:
        config = parseConfig({
            "node": {"vi_provider": "traced"},
            "instances": [{"name": "SALES", "relay": "127.0.0.1:1433",
                           "serve": ["plain", "via"]}]})
        self.assertEqual(config.viProvider, "traced")
        self.assertEqual(config.relays["SALES"][1], ("plain", "via"))

    def test_they_come_after_srps_own(self) -> None:
        self.assertEqual(transportNames()[:3], ["via", "tcp", "np"])
        self.assertIn("plain", transportNames())
        for kind, found in [(IPortMapTransport, transportNamed("plain")),
                            (IInstanceVerifier, verifierNamed("audit", reactor)),
                            (IVIProvider, viProviderNamed("traced"))]:
            self.assertTrue(verifyObject(kind, found))
            self.assertTrue(verifyObject(IPlugin, found))


def test_a_dropin_directory_on_pythonpath_is_enough(tmp_path: Path) -> None:
    """In a fresh process, putting the directory on PYTHONPATH is all it takes."""
    writeDropins(tmp_path / "thirdparty")
    result = subprocess.run(
        [sys.executable, "-c",
         "from srp.transports import transportNamed\n"
         "from srp.client.verifiers import verifierNamed\n"
         "from srp.transports.via import viProviderNamed\n"
         "print(transportNamed('plain').name, verifierNamed('audit', None).name,"
         " viProviderNamed('traced').name)"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={"PYTHONPATH": str(tmp_path / "thirdparty"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain", "audit", "traced"]


class BuiltinTests(SynchronousTestCase):
    """srp's own implementations: what they provide, and how they are found."""

    def test_every_implementation_provides_its_interface(self) -> None:
        for kind, implementation in [
            (IPortMapTransport, TCPTransport()), (IPortMapTransport, PipeTransport()),
            (IPortMapTransport, VIATransport()),
            (IInstanceVerifier, NoVerifier()), (IInstanceVerifier, TDSVerifier()),
            (IInstanceVerifier, HelloVerifier()),
            (IVIProvider, EmulatedVIProvider()),
        ]:
            self.assertTrue(verifyObject(kind, implementation))
            self.assertTrue(verifyObject(IPlugin, implementation))

    def test_srps_own_are_found_first(self) -> None:
        self.assertIsInstance(transportNamed("tcp"), TCPTransport)
        self.assertIsInstance(transportNamed("np"), PipeTransport)
        self.assertIsInstance(transportNamed("via"), VIATransport)
        self.assertIsInstance(viProviderNamed(), EmulatedVIProvider)
        self.assertIsInstance(viProviderNamed("emulated"), EmulatedVIProvider)

    def test_a_verifier_keeps_time_with_the_reactor_it_is_given(self) -> None:
        clock = Clock()
        tds, hello = verifierNamed("tds", clock), verifierNamed("hello", clock)
        assert isinstance(tds, TDSVerifier) and isinstance(hello, HelloVerifier)
        self.assertEqual((tds.reactor, tds.timeout), (clock, TDSVerifier().timeout))
        self.assertEqual((hello.reactor, hello.timeout), (clock, HelloVerifier().timeout))
        self.assertIsInstance(verifierNamed("none", clock), NoVerifier)
        self.assertIs(TDSVerifier().reactor, reactor)

    def test_unknown_names(self) -> None:
        for lookup, complaint in [
            (lambda: transportNamed("carrier-pigeon"), "unknown transport 'carrier-pigeon'; "
                                                       "choose from via, tcp, np"),
            (lambda: verifierNamed("psychic", None), "unknown verifier 'psychic'; "
                                                     "choose from none, tds, hello"),
            (lambda: viProviderNamed("rdma"), "unknown VI provider 'rdma'; "
                                              "choose from emulated"),
            (lambda: clientFromString(reactor, "via:h:1:provider=rdma"),
             "via endpoint: unknown VI provider 'rdma'"),
            (lambda: clientFromString(reactor, "via:h:1:provider=rdma:receives=2"),
             "receives is the emulated provider's"),
        ]:
            with self.assertRaises(ValueError) as caught:
                lookup()
            self.assertIn(complaint, str(caught.exception))
        with self.assertRaises(ConfigError) as config:
            parseConfig({"node": {"vi_provider": "rdma"}})
        self.assertIn("vi_provider: unknown VI provider 'rdma'", str(config.exception))

    def test_endpoints_follow_the_preference_and_skip_unknown_names(self) -> None:
        info = InstanceInfo("H", "I", tcp=1433, np="\\\\H\\pipe\\sql\\query")
        found = [name for name, _ in endpointsFor(reactor, "127.0.0.1", info,
                                                  ("unknown", "np", "via", "tcp"), 1)]
        self.assertEqual(found, ["np", "tcp"])

    def test_listeners_advertise_what_they_bound(self) -> None:
        pipes = tempfile.mkdtemp(prefix="srp")  # short: AF_UNIX paths are short
        ports: list[IListeningPort] = []

        async def cleanUp() -> None:
            # The pipe's socket file goes when its port has stopped, then the directory.
            for port in ports:
                await maybeDeferred(port.stopListening)
            shutil.rmtree(pipes, True)

        self.addCleanup(lambda: Deferred.fromCoroutine(cleanUp()))
        node = NodeListening("127.0.0.1", nodeId=0xAB, pipeDirectory=Path(pipes))
        info = InstanceInfo("H", "SALES")
        for transport in (TCPTransport(), PipeTransport(), VIATransport()):
            port, info = transport.listen(reactor, info, echoFactory(), node)
            ports.append(port)
        assert info.via is not None
        self.assertEqual(info.tcp, portOf(ports[0]))
        self.assertEqual(info.np, "\\\\H\\pipe\\MSSQL$SALES\\srp-00000000000000ab\\sql\\query")
        self.assertEqual(info.via.addresses, (ViaAddress("127.0.0.1", portOf(ports[2])),))
