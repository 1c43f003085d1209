"""
etcd over TLS and with its authentication on: the client's TLS settings,
their configuration, and real `srp serve` nodes on a real etcd that takes
only clients with a certificate of its CA and a user with a role on the
cluster's prefix; a wrong CA or password is one log line and a status that
says etcd is unreachable.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from srp.client.endpoint import SRPClientEndpoint
from srp.client.etcdwatch import EtcdPlaces, WatchEtcd
from srp.etcd.access import TLSSettings
from srp.etcd.client import EtcdClient, Unreachable, _parsed
from srp.server.config import ConfigError, parseConfig
from srp.testing.certs import PKI, makePKI
from srp.testing.etcd import EtcdCluster
from srp.testing.processes import NodeProcess

from .test_etcd_processes import CLUSTER, plain, resolved, startNode, status, waitFor
from .test_subscriptions import Listener


def clientTLS(pki: PKI, ca: PKI | None = None, certificate: bool = True) -> TLSSettings:
    """The client side of C{pki}: its CA (or C{ca}'s), and its client certificate."""
    return TLSSettings((ca or pki).ca.cert.read_bytes(),
                       pki.client.cert.read_bytes() if certificate else None,
                       pki.client.key.read_bytes() if certificate else None)


class TLSClientTests(TestCase):
    """The client against a real etcd member that serves https:// and wants client certificates."""

    directory: Path
    pki: PKI
    other: PKI
    etcd: EtcdCluster

    @classmethod
    def setUpClass(cls) -> None:
        cls.directory = Path(tempfile.mkdtemp(prefix="srp-pki-"))
        directory = cls.directory
        cls.pki = makePKI(directory / "pki")
        cls.other = makePKI(directory / "other", name="another CA")
        cls.etcd = EtcdCluster(size=1, tls=cls.pki).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.etcd.stop()
        shutil.rmtree(cls.directory)

    def client(self, tls: TLSSettings) -> EtcdClient:
        client = EtcdClient(reactor, self.etcd.endpoints, tls=tls)
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def test_putAndRange(self) -> Any:
        """With the CA and a client certificate, requests go through."""
        self.assertTrue(self.etcd.endpoints[0].startswith("https://127.0.0.1:"))
        client = self.client(clientTLS(self.pki))
        revision = yield client.put(b"/t/tls", b"over TLS")
        _, kvs = yield client.range(b"/t/tls")
        self.assertEqual([(kv.value, kv.modRevision) for kv in kvs], [(b"over TLS", revision)])

    @inlineCallbacks
    def test_wrongCA(self) -> Any:
        """etcd's certificate not signed by the CA given: unreachable, saying why."""
        client = self.client(clientTLS(self.pki, ca=self.other))
        with self.assertRaises(Unreachable) as caught:
            yield client.range(b"/t/tls")
        self.assertEqual(str(caught.exception), f"no etcd endpoint answered "
                         f"({self.etcd.endpoints[0]}: TLS failed: certificate verify failed)")

    async def test_endpointWithWrongCA(self) -> None:
        """
        An srp: endpoint whose etcd_ca did not sign etcd's certificate: its
        watch fails at once, one log line says why, and it keeps trying.
        """
        string = endpointString(etcd=self.etcd.endpoints[0], etcd_ca=str(self.other.ca.cert),
                                etcd_cert=str(self.pki.client.cert),
                                etcd_key=str(self.pki.client.key))
        endpoint = clientFromString(reactor, string)
        assert isinstance(endpoint, SRPClientEndpoint)
        listener = Listener()
        with capturedLogs() as events:
            endpoint.addMoveListener(listener)
            self.addCleanup(endpoint.removeMoveListener, listener)
            watch = endpoint.subscription
            assert isinstance(watch, EtcdPlaces)
            failures: list[str] = []
            failed = watch.mirror.onError

            def counted(error: str) -> None:
                failures.append(error)
                failed(error)

            watch.mirror.onError = counted
            deadline = reactor.seconds() + 5
            while len(failures) < 3:
                self.assertLess(reactor.seconds(), deadline, "the watch did not fail")
                await deferLater(reactor, 0.05, lambda: None)
        refused = (f"no etcd endpoint answered ({self.etcd.endpoints[0]}: TLS failed: "
                   f"certificate verify failed)")
        self.assertEqual((watch.error, set(failures)), (refused, {refused}))
        self.assertEqual([formatEvent(e) for e in events if e.get("log_namespace", "")
                          .startswith("srp.")], [
            f"Cannot watch etcd for the moves of SALES, trying again: {refused}"])
        self.assertEqual(listener.moves, 0)

    @inlineCallbacks
    def test_noClientCertificate(self) -> Any:
        """Without a client certificate, etcd ends the handshake: unreachable, by TLS."""
        client = self.client(clientTLS(self.pki, certificate=False))
        with self.assertRaises(Unreachable) as caught:
            yield client.range(b"/t/tls")
        self.assertIn(f"{self.etcd.endpoints[0]}: TLS failed: ", str(caught.exception))


def etcdTable(**more: Any) -> dict[str, Any]:
    """A [cluster] table on etcd at https://e:2379, with C{more}."""
    return {"backend": "etcd", "etcd": ["https://e:2379"]} | more


def test_configTLS(tmp_path: Path) -> None:
    """etcd_ca, etcd_cert and etcd_key are read (and checked) when the configuration is."""
    pki = makePKI(tmp_path)
    table = etcdTable(etcd_ca=str(pki.ca.cert), etcd_cert=str(pki.client.cert),
                      etcd_key=str(pki.client.key))
    etcd = parseConfig({"cluster": table}).cluster.etcd  # type: ignore[union-attr]
    assert etcd is not None and etcd.tls == clientTLS(pki)
    assert "PRIVATE KEY" not in repr(etcd)
    caOnly = parseConfig({"cluster": etcdTable(etcd_ca=str(pki.ca.cert))}).cluster
    assert caOnly is not None and caOnly.etcd is not None
    assert caOnly.etcd.tls == TLSSettings(pki.ca.cert.read_bytes())
    pki.client.key.chmod(0o644)
    with pytest.raises(ConfigError, match=f"n.toml \\[cluster\\]: etcd_key {pki.client.key} is "
                       f"readable by others; run: chmod 600 {pki.client.key}"):
        parseConfig({"cluster": table}, "n.toml")


#: Mistakes in the TLS settings, which a node's configuration and the srp:
#: endpoint's options refuse alike: the settings (files in a PKI's
#: directory; etcd at https://e:2379 unless given) and the complaint.
TLS_MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"etcd_ca": "ca.pem", "etcd": ["http://e:2379"]},
     "etcd_ca needs https:// etcd endpoints"),
    ({"etcd_cert": "client.pem"}, "etcd_cert needs etcd_key"),
    ({"etcd_key": "client-key.pem"}, "etcd_key needs etcd_cert"),
    ({"etcd_ca": "none.pem"}, "cannot read etcd_ca .*none.pem: No such file or directory"),
    ({"etcd_ca": "client-key.pem"}, "etcd_ca .*client-key.pem holds no PEM certificate"),
    ({"etcd_cert": "ca.pem", "etcd_key": "client-key.pem"},
     "etcd_cert .*ca.pem and etcd_key .*client-key.pem are not a PEM certificate and its key"),
]


@pytest.mark.parametrize(("keys", "complaint"), [
    *TLS_MISTAKES, ({"etcd_ca": 7}, "etcd_ca must be a file name, not 7")])
def test_badTLSConfig(tmp_path: Path, keys: dict[str, Any], complaint: str) -> None:
    """Each mistake in the TLS settings is one line naming it."""
    makePKI(tmp_path)
    table = etcdTable(**{k: str(tmp_path / v) if isinstance(v, str) and k != "etcd" else v
                         for k, v in keys.items()})
    with pytest.raises(ConfigError, match=f"n.toml \\[cluster\\]: {complaint}"):
        parseConfig({"cluster": table}, "n.toml")


def endpointString(target: str = "db1/SALES", **options: str) -> str:
    """An srp: endpoint of C{target} with C{options}, their colons escaped."""
    escaped = [f"{name}={value}".replace(":", "\\:") for name, value in options.items()]
    return ":".join([f"srp:{target}", *escaped])


def watchOf(**options: str) -> WatchEtcd:
    """How the srp: endpoint with C{options} watches etcd."""
    endpoint = clientFromString(Clock(), endpointString(**options))
    assert isinstance(endpoint, SRPClientEndpoint) and endpoint.watchEtcd is not None
    return endpoint.watchEtcd


def test_endpointTLS(tmp_path: Path) -> None:
    """
    The srp: endpoint's etcd_ca, etcd_cert and etcd_key are read (and
    checked) when its string is parsed, as a node's configuration is.
    """
    pki = makePKI(tmp_path)
    files = {"etcd_ca": str(pki.ca.cert), "etcd_cert": str(pki.client.cert),
             "etcd_key": str(pki.client.key)}
    watch = watchOf(etcd="https://e:2379,https://f:2379", **files)
    assert watch == WatchEtcd(("https://e:2379", "https://f:2379"), "db1", tls=clientTLS(pki))
    assert "PRIVATE KEY" not in repr(watch)
    assert watchOf(etcd="https://e:2379", etcd_ca=files["etcd_ca"]).tls == \
        TLSSettings(pki.ca.cert.read_bytes())
    assert watchOf(etcd="https://e:2379").tls == TLSSettings()  # the platform's CAs
    assert watchOf(etcd="http://e:2379").tls is None
    pki.client.key.chmod(0o644)
    with pytest.raises(ValueError, match=re.escape(
            f"srp endpoint: etcd_key {pki.client.key} is readable by others; "
            f"run: chmod 600 {pki.client.key}")):
        watchOf(etcd="https://e:2379", **files)


@pytest.mark.parametrize(("keys", "complaint"), TLS_MISTAKES)
def test_badTLSEndpoint(tmp_path: Path, keys: dict[str, Any], complaint: str) -> None:
    """Each mistake in the endpoint's TLS options is one ValueError, as it parses."""
    makePKI(tmp_path)
    options = {"etcd": ",".join(keys.get("etcd", ["https://e:2379"]))} | {
        name: str(tmp_path / file) for name, file in keys.items() if name != "etcd"}
    with pytest.raises(ValueError, match=f"^srp endpoint: {complaint}"):
        watchOf(**options)


def test_endpointPassword(tmp_path: Path) -> None:
    """The endpoint's etcd_password_file: as a node's, only its owner may read it."""
    secret = tmp_path / "srp.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert watchOf(etcd="http://e:2379", etcd_user="srp", etcd_password_file=str(secret)) == \
        WatchEtcd(("http://e:2379",), "db1", "srp", "s3cret")
    for options, complaint in (
            ({"etcd_password_file": str(secret)}, "etcd_password_file needs etcd_user"),
            ({"etcd_user": "srp", "etcd_password_file": str(tmp_path / "none")},
             f"cannot read etcd_password_file {tmp_path / 'none'}: No such file or directory")):
        with pytest.raises(ValueError, match=re.escape(f"srp endpoint: {complaint}")):
            watchOf(etcd="http://e:2379", **options)
    secret.chmod(0o644)
    with pytest.raises(ValueError, match=re.escape(
            f"srp endpoint: etcd_password_file {secret} is readable by others; "
            f"run: chmod 600 {secret}")):
        watchOf(etcd="http://e:2379", etcd_user="srp", etcd_password_file=str(secret))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdCluster, Path]]:
    """
    A three-member etcd over TLS with authentication on: root, and a user
    "srp" (password in srp.password) whose role may read and write
    /srp/CLUSTER/ only.  The client certificate names no one: etcd's
    gateway refuses one with a common name when authentication is on.
    """
    directory = tmp_path_factory.mktemp("secured")
    pki = makePKI(directory / "pki", client="")
    makePKI(directory / "other", name="another CA")
    for name, password in (("srp.password", "s3cret\n"), ("wrong.password", "guess\n")):
        (directory / name).write_text(password)
        (directory / name).chmod(0o600)
    with EtcdCluster(size=3, tls=pki) as cluster:
        cluster.enableAuth("rootpw", {"srp": ("s3cret", f"/srp/{CLUSTER}/".encode())})
        yield cluster, directory


def secureNode(secured: tuple[EtcdCluster, Path], tmp_path: Path, name: str,
               instance: dict[str, Any], ca: str = "pki", password: str = "srp",
               user: str = "srp") -> NodeProcess:
    """A node on the secured etcd, trusting C{ca}'s CA, as C{user} with C{password}'s file."""
    etcd, directory = secured
    return startNode(tmp_path, name, etcd, [instance],
                     etcd_ca=str(directory / ca / "ca.pem"),
                     etcd_cert=str(directory / "pki" / "client.pem"),
                     etcd_key=str(directory / "pki" / "client-key.pem"),
                     etcd_user=user, etcd_password_file=str(directory / f"{password}.password"))


def test_nodesOverTLSWithAuth(secured: tuple[EtcdCluster, Path], tmp_path: Path) -> None:
    """Two nodes reach etcd over TLS as the srp user, and see each other's registrations."""
    a = secureNode(secured, tmp_path, "a", {"name": "SALES", "tcp": 50101})
    b = secureNode(secured, tmp_path, "b", {"name": "REPORTS", "tcp": 50102})
    try:
        waitFor(lambda: bool(resolved(b.address, "SALES")), 10, "SALES at node b")
        [sales] = resolved(b.address, "SALES")
        assert (sales["host"], sales["tcp"]) == (a.address, 50101)
        document = status(a.address)
        assert (document["stale"], document["etcd"], document["etcd_error"]) == \
            (False, "reachable", None)
        assert document["revision"] > 0
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize(("settings", "error"), [
    ({"ca": "other"}, "TLS failed: certificate verify failed"),
    ({"password": "wrong"}, "etcdserver: authentication failed, invalid user ID or password"),
    ({"user": "intruder"}, "etcdserver: authentication failed, invalid user ID or password"),
])
def test_refusedByEtcd(secured: tuple[EtcdCluster, Path], tmp_path: Path,
                       settings: dict[str, str], error: str) -> None:
    """
    A wrong CA, password or user: the node starts, answers its own
    instance, logs one line saying why etcd refused it, and its status says
    etcd is unreachable and why.
    """
    node = secureNode(secured, tmp_path, "n", {"name": "SALES", "tcp": 50101}, **settings)
    try:
        waitFor(lambda: status(node.address)["etcd"] == "unreachable", 10, "the refusal")
        document = status(node.address)
        assert document["stale"] is True and error in document["etcd_error"]
        answer = plain(node.address, "SALES")
        assert answer is not None and b";tcp;50101;;" in answer
        lines = [line for line in node.log().splitlines() if error in line]
        assert len(lines) == 1, node.log()
        assert "Could not grant an etcd lease: " in lines[0]
        assert "Traceback" not in node.log()
    finally:
        node.stop()


def test_answerNotJSON() -> None:
    """An answer that is not etcd's JSON (the gateway's own refusals) is an error in its words."""
    assert _parsed(b"CommonName of client sending a request against gateway will be ignored\n",
                   400) == {"error": "HTTP 400: CommonName of client sending a request against "
                                     "gateway will be ignored"}
    assert _parsed(b"", 502) == {"error": "HTTP 502"}
    assert _parsed(b'{"kvs": []}', 200) == {"kvs": []}
