"""The twistd plugin: C{twistd -n srp --config node.toml}."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

from srp.server.config import ConfigError, NodeConfig, loadConfig
from srp.server.node import NodeService


class Options(usage.Options):
    """Options of C{twistd srp}."""

    synopsis = "--config node.toml"
    longdesc = (
        "Run an srp node: a SQL Server Browser ([MC-SQLR]) responder on UDP 1434 "
        "for the instances in the configuration file.  Example:\n"
        "  twistd -n srp --config /etc/srp/node.toml"
    )
    optParameters = [["config", "c", None, "The node configuration file (TOML)."]]

    config: NodeConfig

    def postOptions(self) -> None:
        """Load and validate the configuration, or fail with its one-line error."""
        if self["config"] is None:
            raise usage.UsageError("--config is required: the node configuration file (TOML)")
        try:
            self.config = loadConfig(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    """The L{NodeService} that C{options} describe."""
    return NodeService(options.config)
