"""
Reply budgets: how many bytes a node sends, to one source and in all, per second.

UDP 1434 replies are larger than the requests that ask for them, so a
spoofed flood could use a node as an amplifier.  Token buckets bound the
reply bandwidth per source address and overall; a normal client, asking a
few times a second, never meets them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime

from srp.wire.cluster import MAX_COUNT


@frozen
class Budget:
    """A rate in bytes per second and a burst in bytes; a rate of 0 means no limit."""

    rate: float
    burst: float

    @property
    def unlimited(self) -> bool:
        """Whether this budget limits nothing."""
        return self.rate <= 0


#: Per source address: about 2,500 single-instance replies a second.
DEFAULT_PER_SOURCE = Budget(rate=256 * 1024, burst=512 * 1024)
#: All sources together.
DEFAULT_GLOBAL = Budget(rate=8 * 1024 * 1024, burst=16 * 1024 * 1024)
#: Kept for quiet sources (those that used less than half their burst), so
#: that a flood from busy sources cannot starve a normal client.
DEFAULT_RESERVE = Budget(rate=1024 * 1024, burst=2 * 1024 * 1024)
#: How many sources' buckets are kept (the least recently used go first).
MAX_SOURCES = 65536


@define
class TokenBucket:
    """Tokens (bytes) that refill at C{budget.rate} a second, up to C{budget.burst}."""

    budget: Budget
    tokens: float
    stamp: float

    def take(self, now: float, amount: int) -> bool:
        """Spend C{amount} tokens if there are enough; say whether there were."""
        self.tokens = min(self.budget.burst, self.tokens + (now - self.stamp) * self.budget.rate)
        self.stamp = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


@define
class ReplyLimiter:
    """The per-source and global reply budgets of a node."""

    clock: IReactorTime
    perSource: Budget = DEFAULT_PER_SOURCE
    overall: Budget = DEFAULT_GLOBAL
    reserve: Budget = DEFAULT_RESERVE
    maxSources: int = MAX_SOURCES
    _sources: OrderedDict[str, TokenBucket] = field(factory=OrderedDict, init=False)
    _everyone: TokenBucket | None = field(default=None, init=False)
    _quiet: TokenBucket | None = field(default=None, init=False)
    _blockedUntil: dict[str, float] = field(factory=dict, init=False)

    def blocked(self, source: str) -> bool:
        """
        Whether C{source} spent its budget and has not earned a reply back yet:
        its datagrams can be dropped before any other work.
        """
        until = self._blockedUntil.get(source)
        if until is None:
            return False
        if self.clock.seconds() < until:
            return True
        del self._blockedUntil[source]
        return False

    def allow(self, source: str, size: int) -> bool:
        """
        Whether a reply of C{size} bytes to C{source} fits the budgets now (and spend it).

        Every source has its own budget.  A quiet source, one that used less
        than half its burst, is answered from the reserve while it lasts;
        the others share the global budget.
        """
        now = self.clock.seconds()
        quiet = False
        if not self.perSource.unlimited:
            bucket = self._sources.get(source)
            if bucket is None:
                bucket = self._sources[source] = TokenBucket(self.perSource,
                                                             self.perSource.burst, now)
                if len(self._sources) > self.maxSources:
                    self._sources.popitem(last=False)
            else:
                self._sources.move_to_end(source)
            if not bucket.take(now, size):
                if len(self._blockedUntil) >= self.maxSources:
                    self._blockedUntil.clear()
                self._blockedUntil[source] = now + (size - bucket.tokens) / self.perSource.rate
                return False
            quiet = bucket.tokens >= self.perSource.burst / 2
        if quiet and not self.reserve.unlimited:
            if self._quiet is None:
                self._quiet = TokenBucket(self.reserve, self.reserve.burst, now)
            if self._quiet.take(now, size):
                return True
        if not self.overall.unlimited:
            if self._everyone is None:
                self._everyone = TokenBucket(self.overall, self.overall.burst, now)
            if not self._everyone.take(now, size):
                return False
        return True

    def __len__(self) -> int:
        """How many sources' buckets are kept."""
        return len(self._sources)


@frozen
class StateBounds:
    """
    How much cluster state a node keeps, whatever it is sent.

    Past a bound the node refuses the rest, logs it and counts it.
    """

    #: The most a KeepAlive can count: what one node can carry, in a Join in parts.
    maxRegistrationsPerNode: int = MAX_COUNT
    maxInstances: int = 65536
    #: A KeepAliveAck lists every passive in one datagram: about 3,000 fit.
    maxPassives: int = 2048
    #: Clients subscribed to pushed moves (each a few hundred bytes).
    maxSubscriptions: int = 4096


def tallied(counters: Counter[str], counter: str) -> bool:
    """Count one more C{counter}; whether this one is worth a log line (1, 10, 100, ...)."""
    counters[counter] += 1
    count = counters[counter]
    return count in (1, 10, 100) or count % 1000 == 0
