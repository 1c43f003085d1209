"""
A history checker for fail-over runs, in the spirit of Jepsen's: it reads
what a client sent and every answer it got, and says what a user would
call broken.

A run is a set of numbered requests (each sent, perhaps resent) and the
answers, each naming the place (server) that gave it.  After a fault at
C{faultAt} the client moves from place to place; a place is I{replaced}
from the moment the client first hears from a place that had not answered
since the fault.  The checker reports:

  - B{lost}: requests never answered (those sent within C{grace} seconds of
    the end are still in flight and not counted);
  - B{stale}: answers from a place after it was replaced;
  - B{duplicated}: requests answered more than once (a resend whose first
    answer was on the way: harmless for idempotent requests, counted);
  - the longest time without an answer after the fault, and the places in
    the order they first answered.

L{checkFencing} reads every answer of every node of a cluster whose active
carries a fencing token in its answers, and says whether two were ever
active at once.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence

from attrs import frozen


@frozen
class Answer:
    """One answer a client got: when, to which request, from which place."""

    at: float
    number: int
    place: str


@frozen
class HistoryReport:
    """What L{checkHistory} found in one run."""

    sent: int
    lost: tuple[int, ...]
    stale: tuple[Answer, ...]
    duplicated: int
    longestGap: float
    places: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No request lost, no answer from a replaced place."""
        return not self.lost and not self.stale


def checkHistory(sent: Mapping[int, float], answers: Sequence[Answer], faultAt: float,
                 end: float, grace: float = 0.5) -> HistoryReport:
    """
    Check one run: C{sent} maps each request number to when it was last
    sent, C{answers} are all the answers in the order they arrived.
    """
    answered = Counter(a.number for a in answers)
    lost = tuple(sorted(n for n, at in sent.items() if not answered[n] and at < end - grace))
    replacedAt: dict[str, float] = {}
    places: list[str] = []
    stale = []
    for answer in sorted(answers, key=lambda a: a.at):
        if answer.at < faultAt:
            continue
        if answer.place in replacedAt:
            stale.append(answer)
            continue
        if answer.place not in places:
            for earlier in places:
                replacedAt.setdefault(earlier, answer.at)
            places.append(answer.place)
    times = sorted(a.at for a in answers if a.at >= faultAt)
    gaps = itertools.pairwise([faultAt, *times])
    return HistoryReport(
        sent=len(sent), lost=lost, stale=tuple(stale),
        duplicated=sum(1 for count in answered.values() if count > 1),
        longestGap=max((b - a for a, b in gaps), default=end - faultAt),
        places=tuple(places))


@frozen
class Claim:
    """
    One answer a node gave: asked at C{sent}, heard at C{received}, from
    node C{node}, carrying fencing token C{token} (0: the node is not active).
    """

    sent: float
    received: float
    node: int
    token: int


@frozen
class Reign:
    """One active as the answers show it: its token, its node, its first and last answer."""

    token: int
    node: int
    #: When its first answer as active arrived (it was active by then).
    first: float
    #: When its last answer as active was asked for (it was still active then).
    last: float


@frozen
class FencingReport:
    """What L{checkFencing} found: every active seen, and where two overlapped."""

    answers: int
    reigns: tuple[Reign, ...]
    #: Tokens that more than one node answered with.
    shared: tuple[int, ...]
    #: Pairs (older, newer) where the older active still answered after
    #: the newer one had: two actives at one moment.
    overlaps: tuple[tuple[Reign, Reign], ...]
    #: The longest time between two answers that both came from an active.
    longestWithout: float

    @property
    def ok(self) -> bool:
        """At most one active at every moment, each token held by one node."""
        return not self.shared and not self.overlaps


def checkFencing(claims: Sequence[Claim]) -> FencingReport:
    """
    Check that at most one node was active at any moment, from every answer
    of every node: an answer with a token proves its node active at some
    time between when it was asked for and when it arrived.  Two actives
    overlapped if the newer (larger token) answered before the older was
    asked for an answer it still gave as active.
    """
    active = sorted((c for c in claims if c.token), key=lambda c: c.received)
    nodes: dict[int, set[int]] = {}
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for claim in active:
        nodes.setdefault(claim.token, set()).add(claim.node)
        first.setdefault(claim.token, claim.received)
        last[claim.token] = max(last.get(claim.token, claim.sent), claim.sent)
    reigns = tuple(Reign(token, min(nodes[token]), first[token], last[token])
                   for token in sorted(nodes))
    overlaps = tuple((older, newer) for older, newer in itertools.combinations(reigns, 2)
                     if newer.first < older.last)
    gaps = [b.received - a.received for a, b in itertools.pairwise(active)]
    return FencingReport(
        answers=len(claims), reigns=reigns,
        shared=tuple(token for token in sorted(nodes) if len(nodes[token]) > 1),
        overlaps=overlaps, longestWithout=max(gaps, default=0.0))
