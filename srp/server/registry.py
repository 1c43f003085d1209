"""The in-memory registry of the instances a node answers for."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from zope.interface import implementer

from srp.interfaces import IRegistry
from srp.records import InstanceRecord, instanceKey


@implementer(IRegistry)
class Registry:
    """An L{IRegistry} kept in a dict keyed by upper-cased instance name."""

    def __init__(self, records: Iterable[InstanceRecord] = ()) -> None:
        self.generation = 0
        self._records: dict[str, InstanceRecord] = {}
        self._visible: list[InstanceRecord] | None = None
        for record in records:
            self.register(record)

    def __len__(self) -> int:
        return len(self._records)

    def lookup(self, name: str) -> InstanceRecord | None:
        return self._records.get(instanceKey(name))

    def visible(self) -> Sequence[InstanceRecord]:
        if self._visible is None:
            self._visible = sorted(
                (r for r in self._records.values() if not r.hidden), key=lambda r: r.key
            )
        return self._visible

    def register(self, record: InstanceRecord) -> None:
        self._records[record.key] = record
        self._changed()

    def unregister(self, name: str) -> None:
        if self._records.pop(instanceKey(name), None) is not None:
            self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self._visible = None
