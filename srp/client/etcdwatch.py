"""
An instance's places as an etcd-backed cluster holds them, kept by a watch
of the cluster's prefix: what the C{srp:} endpoint's C{etcd=} option uses
to learn of moves the moment a node writes them, without asking any node.

The keys are the ones every node of the cluster writes and watches
(L{srp.etcd.keys.ClusterKeys}): each node's addresses, and each of its
registrations encoded as a Join carries it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from attrs import field, frozen
from twisted.logger import Logger

from srp.client.resolver import Candidate, candidatesOf
from srp.client.subscription import Notified
from srp.etcd.access import TLSSettings
from srp.etcd.client import DEFAULT_TIMEOUT, EtcdClient, Event, KeyValue
from srp.etcd.keys import ClusterKeys
from srp.etcd.watch import PrefixMirror
from srp.records import Registration, instanceKey
from srp.wire.errors import WireError
from srp.wire.fields import Reader, readRegistration

#: What the candidates a watch finds say they came from.
SOURCE = "etcd"


@frozen
class WatchEtcd:
    """
    How an endpoint watches a cluster's etcd: its endpoints (URLs), the
    cluster's name (its keys' prefix), etcd's user and password, and TLS
    for C{https://} endpoints (None: the platform's CAs, no client certificate).
    """

    endpoints: tuple[str, ...]
    clusterName: str
    user: str | None = None
    password: str = field(default="", repr=False)
    timeout: float = DEFAULT_TIMEOUT
    tls: TLSSettings | None = None


class EtcdPlaces:
    """
    The places of C{instance} in a cluster on etcd, handed to C{notified}
    (best first, live ones first) each time they change, until L{stop}.

    When etcd cannot be watched (out of reach, or it refuses this client:
    a wrong CA, certificate or password), one line in the log says why,
    L{error} holds the reason, and the watch is tried again.
    """

    log = Logger()

    def __init__(self, reactor: Any, settings: WatchEtcd, instance: str, notified: Notified,
                 client: EtcdClient | None = None) -> None:
        self.settings = settings
        self.instance = instance
        self.key = instanceKey(instance)
        self.notified = notified
        self.keys = ClusterKeys(settings.clusterName)
        self.client = client if client is not None else EtcdClient(
            reactor, settings.endpoints, settings.timeout, settings.user, settings.password,
            settings.tls)
        self.mirror = PrefixMirror(self.client, self.keys.root, self._snapshot, self._events,
                                   self._watching, onError=self._failed)
        #: Why etcd could not be watched, since the last watch ran (None: no failure).
        self.error: str | None = None
        #: Each node's registration of the instance, with its create revision (its arrival).
        self.registrations: dict[int, tuple[Registration, int]] = {}
        #: Each node's first address.
        self.addresses: dict[int, str] = {}
        self.last: tuple[Candidate, ...] | None = None

    def start(self) -> None:
        """Read the prefix and watch it."""
        self.mirror.start()

    def stop(self) -> None:
        """Stop watching."""
        self.mirror.stop()
        self.client.close()

    def _failed(self, error: str) -> None:
        if self.error is None:
            self.log.warn("Cannot watch etcd for the moves of {instance}, trying again: "
                          "{error}", instance=self.instance, error=error)
        self.error = error

    def _watching(self, watching: bool) -> None:
        if watching and self.error is not None:
            self.log.info("Watching etcd for the moves of {instance}", instance=self.instance)
            self.error = None

    def _snapshot(self, kvs: Sequence[KeyValue]) -> None:
        self.registrations, self.addresses = {}, {}
        self._events([Event(kv) for kv in kvs])

    def _events(self, events: Sequence[Event]) -> None:
        for kind, node, instance, event in self.keys.parsed(events):
            if kind == "node":
                self._node(node, event)
            elif kind == "registration" and instance == self.key:
                self._registration(node, event)
        self._tell()

    def _node(self, node: int, event: Event) -> None:
        if event.deleted:
            self.addresses.pop(node, None)
            self.registrations.pop(node, None)
            return
        try:
            self.addresses[node] = str(json.loads(event.kv.value)["addresses"][0])
        except (ValueError, KeyError, IndexError, TypeError):
            self.log.warn("Ignoring node {node:016x}'s malformed addresses in etcd", node=node)

    def _registration(self, node: int, event: Event) -> None:
        if event.deleted:
            self.registrations.pop(node, None)
            return
        try:
            registration = readRegistration(Reader(event.kv.value))
        except (WireError, ValueError) as e:
            self.log.warn("Ignoring a malformed registration in etcd: {error}", error=e)
            return
        self.registrations[node] = (registration, event.kv.createRevision)

    def _tell(self) -> None:
        """Hand on the places if they changed: the registrations of nodes with a known address."""
        ranked = sorted((revision, registration.priority, node, registration)
                        for node, (registration, revision) in self.registrations.items()
                        if node in self.addresses and not registration.hidden)
        ranked.sort(key=lambda entry: entry[1])  # by priority; among equals, by arrival
        candidates = candidatesOf([entry[3] for entry in ranked],
                                  [self.addresses[entry[2]] for entry in ranked], SOURCE)
        if candidates and candidates != self.last:
            self.last = candidates
            self.notified(candidates, SOURCE)
