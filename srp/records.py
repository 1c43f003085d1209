"""Records shared by the client and server sides: what a node registers."""

from __future__ import annotations

from attrs import field, frozen

from srp.wire.instances import InstanceInfo, ViaAddress, ViaInfo, checkPort

__all__ = ["InstanceRecord", "ViaAddress", "ViaInfo", "instanceKey"]


def instanceKey(name: str) -> str:
    """The lookup key of an instance name: SQL Server matches them case-insensitively."""
    return name.upper()


def _optionalDACPort(_: object, __: object, value: int | None) -> None:
    if value is not None:
        checkPort("DAC port", value)


@frozen(cache_hash=True)
class InstanceRecord:
    """
    One instance as a node registers it.

    C{info} is what clients are told; C{hidden} keeps the instance out of
    every reply (SQL Server's HideInstance); C{dacPort} is the TCP port of the
    dedicated administrator connection, if the instance has one.
    """

    info: InstanceInfo
    hidden: bool = False
    dacPort: int | None = field(default=None, validator=_optionalDACPort)

    @property
    def name(self) -> str:
        """The instance name."""
        return self.info.instanceName

    @property
    def key(self) -> str:
        """The case-insensitive lookup key of this instance."""
        return instanceKey(self.info.instanceName)
