"""The twistd plugin: C{twistd -n srp --config node.toml}, with proxies beside the node."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.python import usage

from srp.client.proxy import proxyServices
from srp.notify import notify
from srp.options import NodeOptions
from srp.records import ProxyRoute, proxyRoute
from srp.server.config import ClusterConfig, ConfigError, NodeConfig, loadConfig, withMetrics
from srp.server.node import NodeService, NodeStartError
from srp.wire import WireError


class Options(NodeOptions):
    """Options of C{twistd srp}."""

    synopsis = ("Usage: twistd [twistd options] srp --config node.toml "
                "[--proxy ADDRESS:PORT=CLUSTER/INSTANCE ...]")
    longdesc = (
        "Run an srp node: a SQL Server Browser ([MC-SQLR]) responder on UDP 1434 "
        "for the instances in the configuration file, and the proxies of its [[proxies]] "
        "tables and of each --proxy (with --proxy only, no node: just the proxies)."
    )
    examples = (
        "twistd -n srp --config /etc/srp/node.toml",
        "twistd --pidfile /run/srp.pid --logfile /var/log/srp.log srp --config node.toml",
        "twistd -n srp --config node.toml --metrics 127.0.0.1:9434",
        "twistd -n srp --proxy 127.0.0.1:1433=db1/SALES",
    )
    config: NodeConfig | None

    def __init__(self) -> None:
        super().__init__()
        self["proxy"] = []

    def opt_proxy(self, spec: str) -> None:
        """Also run a proxy: ADDRESS:PORT=CLUSTER/INSTANCE (repeatable)."""
        listen, sep, target = spec.partition("=")
        try:
            if not sep:
                raise WireError(f"--proxy {spec!r} is not ADDRESS:PORT=CLUSTER/INSTANCE")
            self["proxy"].append(proxyRoute(listen, target))
        except WireError as e:
            raise usage.UsageError(str(e)) from None

    def postOptions(self) -> None:
        """Load and validate the configuration, or fail with its one-line error."""
        self.config = None
        if self["config"] is None and self["proxy"]:
            return
        super().postOptions()
        try:
            self.config = withMetrics(loadConfig(self["config"]), self["metrics"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def routes(self) -> tuple[ProxyRoute, ...]:
        """Every proxy to run: the configuration's, then the --proxy ones."""
        return (self.config.proxies if self.config else ()) + tuple(self["proxy"])


class TwistdService(MultiService):
    """
    The node and the proxies: they end C{twistd} with a one-line error (not
    a traceback) when they cannot start, and tell systemd (C{Type=notify})
    when the node is ready and when they stop.
    """

    #: The node, if one runs (not with --proxy alone).
    node: NodeService | None = None

    def startService(self) -> None:
        super().startService()
        ready = self.node.whenReady() if self.node is not None else succeed(None)
        ready.addCallback(lambda _: notify("READY=1"))

    def stopService(self) -> Deferred[None]:
        notify("STOPPING=1")
        stopped: Deferred[None] = super().stopService()
        return stopped

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except (NodeStartError, CannotListenError) as e:
            raise SystemExit(f"srp: {e}") from None


def makeService(options: Options) -> IService:
    """The node and the proxies that C{options} describe."""
    from twisted.internet import reactor  # the one twistd installed

    service = TwistdService()
    config = options.config or NodeConfig()
    cluster = config.cluster or ClusterConfig()
    if options.config is not None:
        try:
            service.node = NodeService(options.config, configPath=options["config"])
        except NodeStartError as e:
            raise SystemExit(f"srp: {e}") from None
        service.node.setServiceParent(service)
    try:
        proxyServices(reactor, options.routes(), config.port, cluster.name,
                      cluster.key).setServiceParent(service)
    except ValueError as e:
        raise SystemExit(f"srp: {e}") from None
    return service
