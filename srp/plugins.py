"""
Finding the implementations of srp's extension points by name.

srp's own implementations come first, then those of every dropin in a
C{twisted/plugins} directory on C{sys.path}, found with
L{twisted.plugin.getPlugins} as L{clientFromString
<twisted.internet.endpoints.clientFromString>} finds endpoint parsers.  A
third party adds a transport, a verifier or a VI provider with a dropin
module, without editing srp.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from twisted.plugin import getPlugins
from zope.interface import Interface

import twisted.plugins

T = TypeVar("T", bound=Interface)


def implementations(interface: type[T], builtins: Iterable[T]) -> Iterator[T]:
    """
    Every provider of C{interface}: C{builtins}, then the plugins.

    The plugins are looked for only when the built-ins run out, so that a
    lookup of a built-in scans no directories.
    """
    yield from builtins
    yield from getPlugins(interface, twisted.plugins)


def named(interface: type[T], name: str, builtins: Iterable[T]) -> T | None:
    """The first provider of C{interface} whose C{name} is C{name}, or L{None}."""
    for candidate in implementations(interface, builtins):
        if getattr(candidate, "name", None) == name:
            return candidate
    return None


def names(interface: type[T], builtins: Iterable[T]) -> list[str]:
    """The names of the providers of C{interface}, built-ins first, each once."""
    seen: list[str] = []
    for candidate in implementations(interface, builtins):
        name = getattr(candidate, "name", None)
        if isinstance(name, str) and name not in seen:
            seen.append(name)
    return seen


def namedOrRaise(interface: type[T], kind: str, name: str, builtins: Iterable[T]) -> T:
    """
    The provider of C{interface} called C{name}.

    @param kind: what it is, for the message: C{transport}, C{verifier}.
    @raise ValueError: naming the known ones, if there is none of that name.
    """
    builtins = tuple(builtins)
    found = named(interface, name, builtins)
    if found is None:
        raise ValueError(f"unknown {kind} {name!r}; choose from "
                         f"{', '.join(names(interface, builtins))}")
    return found
