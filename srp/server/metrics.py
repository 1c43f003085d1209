"""
A node's Prometheus metrics, read from its live counters at scrape time.

Nothing on the answering path touches a Prometheus object: the responder,
the cluster roles, the health monitors and the relays bump their own plain
counters (L{ResponderStats}, the membership's counters, L{SpliceStats}), and
L{NodeCollector} turns what they hold into metric families when Prometheus
asks.  L{metricsSite} serves them in the text exposition format on
Twisted's web server, at C{/metrics}.

Labels stay bounded: request kinds and outcomes, roles and cluster events
are fixed by the code; C{instance} labels name only the node's own
instances, as many as its configuration lists and at most
L{MAX_INSTANCE_SERIES}.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from srp import __version__
from srp.server.etcdmember import EtcdMembership

if TYPE_CHECKING:
    from srp.server.node import NodeService

#: The text exposition format every Prometheus version reads.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: What each request type (a request's first byte) is called in C{kind} labels.
REQUEST_KINDS = {0x02: "broadcast", 0x03: "enumerate", 0x04: "instance", 0x0F: "dac",
                 **{n: "cluster" for n in range(0xA0, 0xB0)}}

#: The C{outcome} label of each of the responder's counters.
OUTCOMES = (("answered", "answeredByType"), ("unknown", "ignoredByType"),
            ("malformed", "malformedByType"), ("limited", "limitedByType"),
            ("denied", "deniedByType"), ("unsent", "unsentByType"),
            ("held", "heldByType"))

#: The most own instances a node has an C{srp_instance_up} series for each of:
#: past it, a scrape would cost milliseconds per hundred instances, and
#: C{srp_own_instances} counts them by health instead.
MAX_INSTANCE_SERIES = 256

#: Every role a node can play, for the C{role} gauge.
ROLES = ("idle", "standalone", "probing", "waiting", "binding", "passive", "active",
         "handing-over", "stopped", "crashed")

#: Membership counters that have metrics of their own: name, help, counter[, labels].
_CLUSTER_COUNTERS: tuple[tuple[str, str, tuple[tuple[str, dict[str, str]], ...]], ...] = (
    ("srp_takeovers_total", "Times this node became active because the active it "
     "followed stopped answering.", (("takeovers", {}),)),
    ("srp_handovers_total", "Graceful hand-overs: given (this node stopped and another "
     "took over) and taken (this node took over from one that stopped).",
     (("handed_over", {"direction": "given"}), ("handovers_taken", {"direction": "taken"}))),
    ("srp_activations_total", "Times this node became active, whatever the cause.",
     (("activations", {}),)),
    ("srp_active_lost_total", "Times the active this node followed stopped answering.",
     (("active_lost", {}),)),
    ("srp_health_checks_total", "Health checks run on this node's instances.",
     (("health_checks", {}),)),
    ("srp_health_check_failures_total", "Health checks that failed.",
     (("health_failures", {}),)),
    ("srp_state_bounds_refused_total", "Cluster state refused because a [limits] bound "
     "was reached.", (("passives_refused", {"bound": "max_passives"}),
                      ("registrations_refused", {"bound": "max_registrations_per_node"}),
                      ("instances_refused", {"bound": "max_instances"}),
                      ("subscriptions_refused", {"bound": "max_subscriptions"}))),
    ("srp_cluster_messages_denied_total", "Cluster messages from networks [access] refuses.",
     (("denied", {}),)),
    ("srp_reloads_total", "Configuration reloads (SIGHUP), applied or failed.",
     (("reloads", {"result": "applied"}), ("reloads_failed", {"result": "failed"}))),
)
_NAMED = {counter for _, _, counters in _CLUSTER_COUNTERS for counter, _ in counters}


def requestKind(requestType: int) -> str:
    """The C{kind} label of a request whose first byte is C{requestType}."""
    return REQUEST_KINDS.get(requestType, "other")


class NodeCollector:
    """
    A C{prometheus_client} collector of one node's metrics, read from its
    counters each time it is collected.
    """

    def __init__(self, node: NodeService) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        """Every metric of the node, as it is now."""
        yield from self._identity()
        yield from self._requests()
        yield from self._cluster()
        yield from self._registrations()
        yield from self._relays()
        yield from self._etcd()

    def _identity(self) -> Iterator[Metric]:
        node, membership = self.node, self.node.backend
        info = InfoMetricFamily("srp", "The node: srp's version, its id and its cluster.",
                                labels=("version", "node", "cluster"))
        info.add_metric((__version__, f"{membership.nodeId:016x}",
                         membership.settings.name), {})
        yield info
        if membership.startedAt is not None:
            yield GaugeMetricFamily("srp_start_time_seconds", "When the node started, in "
                                    "seconds since the Unix epoch.", value=membership.startedAt)
        role = GaugeMetricFamily("srp_role", "1 for the role the node plays now, 0 for the "
                                 "others.", labels=("role",))
        current = node.role
        for name in ROLES if current in ROLES else (*ROLES, current):
            role.add_metric((name,), 1.0 if name == current else 0.0)
        yield role
        yield GaugeMetricFamily("srp_epoch", "The cluster epoch this node knows.",
                                value=membership.epoch)
        if not isinstance(membership, EtcdMembership):
            yield GaugeMetricFamily("srp_passives", "Passives in line to take over, as this "
                                    "node knows them.", value=len(membership.current.passives))

    def _requests(self) -> Iterator[Metric]:
        stats = self.node.stats
        requests = CounterMetricFamily(
            "srp_requests", "[MC-SQLR] requests received on the cluster port, by kind and "
            "outcome.", labels=("kind", "outcome"))
        for outcome, attribute in OUTCOMES:
            byKind: dict[str, int] = {}
            for requestType, count in enumerate(getattr(stats, attribute)):
                if count:
                    kind = requestKind(requestType)
                    byKind[kind] = byKind.get(kind, 0) + count
            for kind, count in sorted(byKind.items()):
                requests.add_metric((kind, outcome), count)
        yield requests
        yield CounterMetricFamily("srp_reply_bytes", "Bytes of the [MC-SQLR] replies sent.",
                                  value=stats.replyBytes)
        yield GaugeMetricFamily("srp_enumeration_omitted_instances", "Instances the "
                                "enumeration reply leaves out: they do not fit in one "
                                "datagram.", value=stats.omitted)

    def _cluster(self) -> Iterator[Metric]:
        counters: Mapping[str, int] = self.node.backend.counters
        for name, documentation, sources in _CLUSTER_COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=tuple(sources[0][1]))
            for counter, labels in sources:
                family.add_metric(tuple(labels.values()), counters[counter])
            yield family
        events = CounterMetricFamily(
            "srp_cluster_events", "Everything else the cluster roles count (probes, Joins, "
            "fencing, ...), by srp status's counter name.", labels=("event",))
        for event, count in sorted(counters.items()):
            if event not in _NAMED:
                events.add_metric((event,), count)
        yield events
        rejected = CounterMetricFamily("srp_cluster_messages_rejected", "Cluster messages "
                                       "that failed authentication, by reason.",
                                       labels=("reason",))
        for reason, count in sorted(self.node.backend.auth.rejected.items()):
            rejected.add_metric((reason,), count)
        yield rejected

    def _registrations(self) -> Iterator[Metric]:
        membership = self.node.backend
        registrations = membership.fleet.registrations() \
            if isinstance(membership, EtcdMembership) else membership.current.registrations()
        down = sum(1 for r in registrations if r.down)
        states = GaugeMetricFamily("srp_registrations", "Registrations this node knows (the "
                                   "active: the whole cluster's), by health.",
                                   labels=("state",))
        states.add_metric(("up",), len(registrations) - down)
        states.add_metric(("down",), down)
        yield states
        own = membership.own
        ownDown = sum(1 for r in own if r.down)
        mine = GaugeMetricFamily("srp_own_instances", "This node's own instances, by "
                                 "health.", labels=("state",))
        mine.add_metric(("up",), len(own) - ownDown)
        mine.add_metric(("down",), ownDown)
        yield mine
        up = GaugeMetricFamily("srp_instance_up", "1 if this node's own instance passes its "
                               "health checks (or has none), 0 if it is down; for at most "
                               f"{MAX_INSTANCE_SERIES} instances.", labels=("instance",))
        if len(own) <= MAX_INSTANCE_SERIES:
            for registration in own:
                up.add_metric((registration.name,), 0.0 if registration.down else 1.0)
        yield up

    def _etcd(self) -> Iterator[Metric]:
        backend = self.node.backend
        if not isinstance(backend, EtcdMembership):
            return
        yield GaugeMetricFamily("srp_etcd_stale", "1 while the node answers from a copy "
                                "that may be behind etcd (its lease not renewed, or its "
                                "watch not open), else 0.", value=float(backend.stale))
        yield GaugeMetricFamily("srp_etcd_stale_seconds", "Seconds since the node last "
                                "heard from etcd that its copy is current: 0 while its "
                                "lease is renewed and its watch is open.",
                                value=backend.staleSeconds())
        yield GaugeMetricFamily("srp_etcd_reachable", "1 if etcd answered the node's last "
                                "request, else 0.", value=float(backend.lease.reachable))
        yield GaugeMetricFamily("srp_etcd_leader", "1 while this node is the elected "
                                "leader, else 0.", value=float(backend.lease.token is not None))
        yield GaugeMetricFamily("srp_etcd_fencing_token", "The leader's fencing token (its "
                                "key's create revision) as the watch last said; 0: no leader.",
                                value=0 if backend.leader is None else backend.leader[1])
        yield GaugeMetricFamily("srp_etcd_revision", "The etcd revision the node's copy is "
                                "at.", value=backend.mirror.revision)

    def _relays(self) -> Iterator[Metric]:
        relays = self.node.relayStats()
        accepted = CounterMetricFamily("srp_relay_connections", "Client connections a relay "
                                       "accepted.", labels=("instance",))
        current = GaugeMetricFamily("srp_relay_open_connections", "Client connections a "
                                    "relay holds open now.", labels=("instance",))
        failed = CounterMetricFamily("srp_relay_failures", "Client connections a relay "
                                     "closed: backend unreachable, or too many bytes sent "
                                     "before it was up.", labels=("instance", "reason"))
        carried = CounterMetricFamily("srp_relay_bytes", "Bytes a relay carried.",
                                      labels=("instance", "direction"))
        for name, stats in sorted(relays.items()):
            accepted.add_metric((name,), stats.accepted)
            current.add_metric((name,), stats.open)
            failed.add_metric((name, "unreachable"), stats.failed)
            failed.add_metric((name, "overflow"), stats.overflowed)
            carried.add_metric((name, "to_backend"), stats.bytesUp)
            carried.add_metric((name, "to_client"), stats.bytesDown)
        yield from (accepted, current, failed, carried)


class MetricsResource(Resource):
    """The metrics of a L{CollectorRegistry}, in Prometheus' text format."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        """The exposition of every metric, collected now."""
        request.setHeader(b"content-type", CONTENT_TYPE)
        return generate_latest(self.registry)


class MetricsSite(Site):
    """A L{Site} that logs no line per request: Prometheus asks every few seconds."""

    def log(self, request: http.Request) -> None:
        pass


def nodeRegistry(node: NodeService) -> CollectorRegistry:
    """A registry of C{node}'s metrics and its process' (CPU, memory, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    return registry


def metricsSite(node: NodeService) -> Site:
    """The web site serving C{node}'s metrics at C{/metrics}."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource(nodeRegistry(node)))
    site = MetricsSite(root)
    site.noisy = False
    return site
