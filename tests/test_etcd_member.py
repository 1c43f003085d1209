"""
An etcd-backed node's watch-fed copy (L{EtcdMembership}): which registrations
plain answers name, which the extended resolve lists, and the [cluster]
settings that choose etcd.  Events are given directly: no etcd runs here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from srp.etcd.client import Event, KeyValue
from srp.interfaces import IClusterBackend
from srp.records import InstanceInfo, Registration
from srp.server.config import ConfigError, parseConfig
from srp.server.etcdmember import DEFAULT_LEASE_TTL, EtcdMembership, EtcdSettings
from srp.server.membership import ClusterSettings
from srp.server.registry import Registry
from srp.server.responder import ResponderStats
from srp.wire.fields import encodeRegistration
from srp.wire.subscriptions import Notify, NotifyAck, Subscribe

ME, NEIGHBOUR, FAR = 0x1, 0x2, 0x3


def registration(name: str, tcp: int, priority: int = 0, down: bool = False) -> Registration:
    return Registration(InstanceInfo("HOST", name, tcp=tcp), priority=priority, down=down)


def member() -> EtcdMembership:
    settings = ClusterSettings(listen=("10.0.0.1",), addresses=(), name="c")
    return EtcdMembership(Clock(), settings, EtcdSettings(("http://127.0.0.1:1",)),
                          Registry(), [registration("MINE", 1000)], ResponderStats(),
                          nodeId=ME)


def nodeKV(m: EtcdMembership, node: int, *addresses: str) -> KeyValue:
    return KeyValue(m.keys.node(node), json.dumps({"addresses": list(addresses)}).encode())


def registrationKV(m: EtcdMembership, node: int, r: Registration) -> KeyValue:
    return KeyValue(m.keys.registration(node, r.key), encodeRegistration(r))


def test_plainAnswersNameOnlyThisAddresssRegistrations() -> None:
    """
    A node on this node's address is answered plainly; one elsewhere only in
    the extended resolve (its ports do not listen here).
    """
    m = member()
    m._snapshot([nodeKV(m, NEIGHBOUR, "10.0.0.1"), nodeKV(m, FAR, "10.0.0.9"),
                 registrationKV(m, NEIGHBOUR, registration("NEAR", 2000)),
                 registrationKV(m, FAR, registration("AWAY", 3000))])
    assert sorted(r.name for r in m.registry.registrations()) == ["MINE", "NEAR"]
    assert sorted(r.name for r in m.fleet.registrations()) == ["AWAY", "MINE", "NEAR"]
    assert m.fleet.lookup("AWAY") == Registration(InstanceInfo("HOST", "AWAY", tcp=3000),
                                                  nodeId=FAR)
    assert m._host(FAR) == "10.0.0.9" and m._host(ME) == "10.0.0.1"


def test_eventsChangeTheCopy() -> None:
    """A health change replaces the registration; a node's deleted key removes all of it."""
    m = member()
    m._snapshot([nodeKV(m, NEIGHBOUR, "10.0.0.1"),
                 registrationKV(m, NEIGHBOUR, registration("MINE", 2000, priority=1))])
    assert [r.nodeId for r in m.registry.candidates("MINE")] == [ME, NEIGHBOUR]
    m._events([Event(registrationKV(m, NEIGHBOUR, registration("MINE", 2000, 1, down=True)))])
    assert m.registry.candidates("mine")[1].down
    m._events([Event(KeyValue(m.keys.node(NEIGHBOUR)), deleted=True)])
    assert [r.nodeId for r in m.fleet.candidates("MINE")] == [ME]
    assert NEIGHBOUR not in m.remote


def test_ownKeysAndMalformedValuesIgnored() -> None:
    """The node's own keys come back through the watch: ignored; garbage is counted."""
    m = member()
    m._events([Event(KeyValue(m.keys.registration(ME, "MINE")), deleted=True),
               Event(KeyValue(m.keys.registration(FAR, "X"), b"\x00garbage"))])
    assert [r.name for r in m.registry.registrations()] == ["MINE"]
    assert m.counters["etcd_malformed"] == 1


def test_leaderSeenAndStatus() -> None:
    """The leader's key gives the leader and its fencing token in status."""
    m = member()
    m._events([Event(KeyValue(m.keys.leader, b"%016x" % FAR, createRevision=42))])
    document = m.status()
    assert (document["leader"], document["fencing_token"]) == (f"{FAR:016x}", 42)
    assert document["backend"] == "etcd" and document["role"] == "passive"


def test_isAClusterBackend() -> None:
    """An etcd-backed node's membership provides the seam the node service works through."""
    assert verifyObject(IClusterBackend, member())


def test_config() -> None:
    """backend = "etcd" reads the endpoints, the lease TTL and who answers."""
    config = parseConfig({"cluster": {"backend": "etcd", "etcd": ["http://127.0.0.1:2379"],
                                      "lease_ttl": 1, "answer": "leader"}})
    assert config.cluster is not None
    assert config.cluster.etcd == EtcdSettings(("http://127.0.0.1:2379",), 1, "leader")
    default = parseConfig({"cluster": {"backend": "etcd", "etcd": ["https://e:2379"]}})
    assert default.cluster is not None and default.cluster.etcd is not None
    assert default.cluster.etcd.leaseTTL == DEFAULT_LEASE_TTL
    assert parseConfig({"cluster": {}}).cluster.etcd is None  # type: ignore[union-attr]


def test_configUserAndPassword(tmp_path: Path) -> None:
    """etcd_user with its password from a file only the node's user may read."""
    secret = tmp_path / "etcd.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    table = {"backend": "etcd", "etcd": ["http://e"], "etcd_user": "srp",
             "etcd_password_file": str(secret)}
    etcd = parseConfig({"cluster": table}).cluster.etcd  # type: ignore[union-attr]
    assert etcd is not None and (etcd.user, etcd.password) == ("srp", "s3cret")
    assert "s3cret" not in repr(etcd)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others; run: chmod 600"):
        parseConfig({"cluster": table}, "n.toml")
    with pytest.raises(ConfigError, match="cannot read etcd_password_file"):
        parseConfig({"cluster": table | {"etcd_password_file": str(tmp_path / "none")}})


@pytest.mark.parametrize(("table", "complaint"), [
    ({"backend": "zookeeper"}, 'backend must be "udp" or "etcd"'),
    ({"backend": "etcd"}, "etcd must list the etcd endpoints"),
    ({"backend": "etcd", "etcd": ["127.0.0.1:2379"]}, "etcd must list the etcd endpoints"),
    ({"backend": "etcd", "etcd": ["http://e"], "lease_ttl": 0}, "lease_ttl 0 is outside"),
    ({"backend": "etcd", "etcd": ["http://e"], "lease_ttl": 1.5}, "whole number of seconds"),
    ({"backend": "etcd", "etcd": ["http://e"], "answer": "some"}, 'answer must be "every"'),
    ({"etcd": ["http://e"]}, 'etcd needs backend = "etcd"'),
    ({"backend": "etcd", "etcd": ["http://e"], "etcd_password_file": "p"},
     "etcd_password_file needs etcd_user"),
])
def test_badConfig(table: dict[str, object], complaint: str) -> None:
    """Each mistake in the etcd settings is one line naming it."""
    with pytest.raises(ConfigError, match=complaint):
        parseConfig({"cluster": table}, "n.toml")


def test_watchFedChangesArePushedToSubscribers() -> None:
    """
    A subscription to an instance answered from the watch-fed copy: a node's
    lease expiring (its keys deleted) pushes the new answer; a stop tells the
    subscribers the answer without this node, and that their subscription ended.
    """
    m = member()
    clock = m.reactor
    m._snapshot([nodeKV(m, FAR, "10.0.0.9"),
                 registrationKV(m, FAR, registration("MINE", 2000, priority=1))])
    socket = DatagramProtocol()
    sent: list[tuple[Notify, tuple[str, int]]] = []

    def send(message: object, to: tuple[str, int], sender: DatagramProtocol) -> None:
        assert isinstance(message, Notify) and sender is socket
        sent.append((message, to))

    m.subscriptions.send = send
    client = ("10.0.0.50", 40000)
    m.subscriptions.received(Subscribe("MINE", 10_000), client, socket)
    [(first, to)] = sent
    assert to == client and [r.nodeId for r in first.registrations] == [ME, FAR]
    assert first.hosts == ("10.0.0.1", "10.0.0.9")
    m.subscriptions.received(NotifyAck("MINE", first.change), client, socket)
    m._events([Event(KeyValue(m.keys.node(FAR)), deleted=True)])
    clock.advance(0)
    assert [r.nodeId for r in sent[-1][0].registrations] == [ME]
    m.subscriptions.received(NotifyAck("MINE", sent[-1][0].change), client, socket)
    m._events([Event(registrationKV(m, FAR, registration("MINE", 2000, priority=1))),
               Event(nodeKV(m, FAR, "10.0.0.9"))])
    clock.advance(0)
    m.stop()
    last, _ = sent[-1]
    assert (last.ttl, [r.nodeId for r in last.registrations]) == (0, [FAR])
