"""The registry of the instances a cluster answers for, and of who registered them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from zope.interface import implementer

from srp.interfaces import IRegistry
from srp.records import Registration, instanceKey


@implementer(IRegistry)
class Registry:
    """
    An L{IRegistry} in memory.

    Each instance may have several registrations, one per node, kept in
    order of priority (lowest first) and, among equals, of arrival: the
    first that is not down is the one [MC-SQLR] clients are told about.
    """

    def __init__(self, registrations: Iterable[Registration] = ()) -> None:
        self.generation = 0
        self._byKey: dict[str, list[Registration]] = {}
        self._perNode: dict[int, int] = {}
        self._visible: list[Registration] | None = None
        self._all: list[Registration] | None = None
        #: Called after every change.
        self._watchers: list[Callable[[], None]] = []
        for registration in registrations:
            self.register(registration)

    def __len__(self) -> int:
        """The number of instances (not registrations)."""
        return len(self._byKey)

    def watch(self, changed: Callable[[], None]) -> None:
        """Call C{changed} after every change of the registry's contents."""
        self._watchers.append(changed)

    def lookup(self, name: str) -> Registration | None:
        candidates = self._byKey.get(instanceKey(name))
        return _answering(candidates) if candidates else None

    def candidates(self, name: str) -> Sequence[Registration]:
        return tuple(self._byKey.get(instanceKey(name), ()))

    def visible(self) -> Sequence[Registration]:
        if self._visible is None:
            answering = (_answering(c) for _, c in sorted(self._byKey.items()))
            self._visible = [r for r in answering if r is not None and not r.hidden]
        return self._visible

    def countOf(self, nodeId: int) -> int:
        """How many registrations node C{nodeId} holds here."""
        return self._perNode.get(nodeId, 0)

    def registrations(self) -> Sequence[Registration]:
        if self._all is None:
            self._all = [r for candidates in self._byKey.values() for r in candidates]
        return self._all

    def register(self, registration: Registration) -> None:
        previous = self._byKey.get(registration.key, [])
        for n, r in enumerate(previous):
            if r.nodeId == registration.nodeId and r.priority == registration.priority:
                # The same node's registration, changed (its health, say): it
                # keeps its place among equals.
                self._byKey[registration.key] = [*previous[:n], registration, *previous[n + 1:]]
                self._changed()
                return
        candidates = [r for r in previous if r.nodeId != registration.nodeId]
        if len(candidates) == len(previous):
            self._count(registration.nodeId, 1)
        position = next(
            (n for n, r in enumerate(candidates) if r.priority > registration.priority),
            len(candidates),
        )
        candidates.insert(position, registration)
        self._byKey[registration.key] = candidates
        self._changed()

    def unregister(self, name: str, nodeId: int) -> None:
        key = instanceKey(name)
        candidates = self._byKey.get(key, [])
        remaining = [r for r in candidates if r.nodeId != nodeId]
        if len(remaining) != len(candidates):
            self._set(key, remaining)
            self._count(nodeId, -1)
            self._changed()

    def removeNode(self, nodeId: int) -> int:
        removed = 0
        for key, candidates in list(self._byKey.items()):
            remaining = [r for r in candidates if r.nodeId != nodeId]
            if len(remaining) != len(candidates):
                removed += len(candidates) - len(remaining)
                self._set(key, remaining)
        if removed:
            self._perNode.pop(nodeId, None)
            self._changed()
        return removed

    def _count(self, nodeId: int, change: int) -> None:
        count = self._perNode.get(nodeId, 0) + change
        if count:
            self._perNode[nodeId] = count
        else:
            self._perNode.pop(nodeId, None)

    def _set(self, key: str, candidates: list[Registration]) -> None:
        if candidates:
            self._byKey[key] = candidates
        else:
            del self._byKey[key]

    def _changed(self) -> None:
        self.generation += 1
        self._visible = None
        self._all = None
        for changed in self._watchers:
            changed()


def _answering(candidates: Sequence[Registration]) -> Registration | None:
    """
    The registration clients are told about: the best one that is not down;
    with all down, the best one (the driver then fails at the right place),
    unless it asks to be hidden when down.
    """
    for registration in candidates:
        if not registration.down:
            return registration
    best = candidates[0]
    return None if best.hideWhenDown else best
