"""
A node's status for C{srp status}, in pages that each fit in one StatusReply.

A page is the status document with a slice of its two lists: the passives
from the offset the StatusQuery gives, then (once they are all given) the
registrations from its offset, as many as fit, and the length of each list
(C{passives_total}, C{registrations_total}), so that the client knows
where the next page starts and when it has them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from srp.records import Registration
from srp.wire.cluster import MAX_PAYLOAD, Member, StatusQuery


def passiveStatus(passive: Member) -> dict[str, Any]:
    """A passive as C{srp status} shows it."""
    return {"node": f"{passive.nodeId:016x}", "address": f"{passive.host}:{passive.port}"}


def registrationStatus(registration: Registration,
                       since: float | None = None) -> dict[str, Any]:
    """
    A registration as C{srp status} shows it.

    @param since: when its health last changed, if this node knows.
    """
    return {"instance": registration.name, "node": f"{registration.nodeId:016x}",
            "priority": registration.priority, "tcp": registration.info.tcp,
            "hidden": registration.hidden, "down": registration.down, "since": since}


def statusPage(summary: Mapping[str, Any], passives: Sequence[Member],
               registrations: Sequence[Registration], query: StatusQuery,
               budget: int = MAX_PAYLOAD,
               describe: Callable[[Registration], dict[str, Any]] = registrationStatus) -> str:
    """
    The JSON page of a status that C{query} asks for, in at most C{budget} bytes.

    @param summary: the status document without its lists: where they go
        it holds empty ones.
    """
    document = dict(summary) | {"passives_total": len(passives),
                                "registrations_total": len(registrations)}
    # The default separators: a list of n entries adds n - 1 times ", ".
    size = len(json.dumps(document))
    lists: tuple[tuple[str, Sequence[Any], int, Any], ...] = (
        ("passives", passives, query.passives, passiveStatus),
        ("registrations", registrations, query.registrations, describe))
    for name, items, start, describe in lists:
        page: list[dict[str, Any]] = []
        document[name] = page
        for index in range(start, len(items)):
            entry = describe(items[index])
            cost = len(json.dumps(entry)) + (2 if page else 0)
            if size + cost > budget:
                return json.dumps(document)
            page.append(entry)
            size += cost
    return json.dumps(document)
