"""Access control: which networks may ask a node, and which may speak cluster messages to it."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from attrs import field, frozen

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(values: Sequence[str]) -> tuple[Network, ...]:
    """
    Parse networks such as C{10.0.0.0/8} or C{::1}.

    @raise ValueError: naming the first that is not a network.
    """
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


@frozen
class NetworkACL:
    """
    Allowed and denied networks.  Deny wins; an empty allow list allows every
    network not denied.
    """

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    _cache: dict[str, bool] = field(factory=dict, eq=False, repr=False)

    @property
    def open(self) -> bool:
        """Whether this list lets every address through."""
        return not self.allow and not self.deny

    def permits(self, host: str) -> bool:
        """Whether C{host} (an IP address) may pass."""
        known = self._cache.get(host)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        verdict = not any(address in n for n in self.deny) and (
            not self.allow or any(address in n for n in self.allow))
        if len(self._cache) >= 65536:
            self._cache.clear()
        self._cache[host] = verdict
        return verdict


@frozen
class AccessPolicy:
    """
    Who may ask what: client requests, enumerations (02, 03) and cluster messages.

    C{enumeration} False answers no enumeration at all, as SQL Server's
    HideInstance does for one instance.
    """

    clients: NetworkACL = field(factory=NetworkACL)
    enumeration: bool = True
    enumerators: NetworkACL = field(factory=NetworkACL)
    cluster: NetworkACL = field(factory=NetworkACL)

    def mayEnumerate(self, host: str) -> bool:
        """Whether C{host} gets an answer to CLNT_BCAST_EX and CLNT_UCAST_EX."""
        return self.enumeration and self.enumerators.permits(host)
