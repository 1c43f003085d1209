"""The seams of srp, as zope.interface interfaces."""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import Attribute, Interface

from srp.records import InstanceRecord


class IRegistry(Interface):
    """The instances a responder answers for."""

    generation = Attribute(
        "An int that changes whenever the registry's contents change, so that "
        "replies built from it can be cached."
    )

    def lookup(name: str) -> InstanceRecord | None:
        """The record of the instance C{name} (any case), or L{None}."""

    def visible() -> Sequence[InstanceRecord]:
        """Every record that is not hidden, ordered by instance name."""

    def register(record: InstanceRecord) -> None:
        """Add C{record}, replacing any record of the same instance name."""

    def unregister(name: str) -> None:
        """Remove the instance C{name} (any case); unknown names are ignored."""
