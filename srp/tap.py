"""The twistd plugin: C{twistd -n srp --config node.toml}."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.python import usage

from srp.notify import notify
from srp.options import NodeOptions
from srp.server.config import ConfigError, NodeConfig, loadConfig, withMetrics
from srp.server.node import NodeService, NodeStartError


class Options(NodeOptions):
    """Options of C{twistd srp}."""

    synopsis = "Usage: twistd [twistd options] srp --config node.toml"
    longdesc = (
        "Run an srp node: a SQL Server Browser ([MC-SQLR]) responder on UDP 1434 "
        "for the instances in the configuration file."
    )
    examples = (
        "twistd -n srp --config /etc/srp/node.toml",
        "twistd --pidfile /run/srp.pid --logfile /var/log/srp.log srp --config node.toml",
        "twistd -n srp --config node.toml --metrics 127.0.0.1:9434",
    )
    config: NodeConfig

    def postOptions(self) -> None:
        """Load and validate the configuration, or fail with its one-line error."""
        super().postOptions()
        try:
            self.config = withMetrics(loadConfig(self["config"]), self["metrics"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


class TwistdNodeService(NodeService):
    """
    A L{NodeService} that ends C{twistd} with its one-line error, not a
    traceback, and tells systemd (C{Type=notify}) when it is ready and
    when it stops.
    """

    def startService(self) -> None:
        super().startService()
        self.whenReady().addCallback(lambda _: notify("READY=1"))

    def stopService(self) -> Deferred[None]:
        notify("STOPPING=1")
        return super().stopService()

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except NodeStartError as e:
            raise SystemExit(f"srp: {e}") from None


def makeService(options: Options) -> IService:
    """The node that C{options} describe."""
    try:
        return TwistdNodeService(options.config, configPath=options["config"])
    except NodeStartError as e:
        raise SystemExit(f"srp: {e}") from None
