"""Command-line options shared by the C{srp} command and the C{twistd srp} plugin."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.python import usage

import twisted
from srp import __version__


class CommandOptions(usage.Options):
    """
    Options whose C{--help} ends with C{examples}, one command a line.

    (Twisted re-wraps C{longdesc}, which would run examples together.)
    """

    examples: Sequence[str] = ()
    synopsis = ""

    def opt_version(self) -> None:
        """Display srp's version and exit."""
        print(f"srp {__version__} (Twisted {twisted.__version__})")
        raise SystemExit(0)

    def getSynopsis(self) -> str:
        return self.synopsis or super().getSynopsis()

    def getUsage(self, width: int | None = None) -> str:
        usage = super().getUsage(width)
        if not self.examples:
            return usage
        return usage + "\nExamples:\n" + "".join(f"  {line}\n" for line in self.examples)


class NodeOptions(CommandOptions):
    """
    Options of a command that runs a node: C{--config FILE}, required, and
    C{--metrics ADDR:PORT}.
    """

    optParameters = [
        ["config", "c", None, "The node configuration file (TOML)."],
        ["metrics", None, None, "Serve Prometheus metrics over HTTP at ADDR:PORT/metrics "
         "(instead of the configuration's [metrics] listen)."],
    ]

    def postOptions(self) -> None:
        if self["config"] is None:
            raise usage.UsageError("--config is required: the node configuration file (TOML)")
