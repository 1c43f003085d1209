"""
The [MC-SQLR] responder: answers SQL Server Browser requests from a registry.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from srp.interfaces import IAnswers, IRegistry
from srp.server.access import AccessPolicy
from srp.server.limits import ReplyLimiter
from srp.wire import (
    BroadcastRequest,
    DACRequest,
    DACResponse,
    EnumerateRequest,
    InstanceInfo,
    InstanceRequest,
    Request,
    WireError,
    decodeRequest,
)
from srp.wire.cluster import isClusterMessage
from srp.wire.instances import encodeEnumeration, encodeInstance
from srp.wire.mcsqlr import frameResponseData

#: Receives cluster messages that arrive on the responder's port: the
#: datagram, its source and the protocol it came in on (to reply through).
ClusterHandler = Callable[[bytes, tuple[str, int], DatagramProtocol], None]

#: Says whether this node may answer clients now (see
#: L{ResolutionResponder.mayAnswer}).
AnswerGate = Callable[[], bool]

#: Most request datagrams whose replies are remembered (then they are forgotten at once).
MAX_CACHED_REPLIES = 65536

#: Seconds between two log lines about malformed datagrams; the ones in
#: between are counted and reported with the next line.
MALFORMED_LOG_INTERVAL = 1.0


def _byType() -> list[int]:
    return [0] * 256


def _total(counts: str, doc: str) -> Any:
    """A read-only attribute: the sum of the counts by request type in C{counts}."""
    return property(lambda stats: sum(getattr(stats, counts)), doc=doc)


@define
class ResponderStats:
    """
    Counters of what a responder did with the datagrams it received.

    Each outcome is counted by the datagram's first byte, its request type
    (C{0x04} CLNT_UCAST_INST, ...; an empty datagram counts as C{0x00}),
    for metrics by kind; the outcome's total is the sum.  An index is as
    cheap to bump as a plain count, so the answering path pays nothing
    for it.
    """

    answeredByType: list[int] = field(factory=_byType)
    #: Well-formed requests that get no reply: unknown or hidden instances,
    #: no DAC port, nothing to enumerate.
    ignoredByType: list[int] = field(factory=_byType)
    malformedByType: list[int] = field(factory=_byType)
    #: Replies the operating system refused to send.
    unsentByType: list[int] = field(factory=_byType)
    #: Requests from networks the access policy refuses.
    deniedByType: list[int] = field(factory=_byType)
    #: Replies not sent because they would exceed a reply budget.
    limitedByType: list[int] = field(factory=_byType)
    #: Replies held back because the node may no longer be the one to answer
    #: (see L{ResolutionResponder.mayAnswer}).
    heldByType: list[int] = field(factory=_byType)
    #: Bytes of the replies sent.
    replyBytes: int = 0
    #: Instances the current enumeration reply leaves out: they do not fit
    #: in one datagram.
    omitted: int = 0

    answered = _total("answeredByType", "Requests answered.")
    ignored = _total("ignoredByType", "Well-formed requests that got no reply.")
    malformed = _total("malformedByType", "Datagrams that are no valid request.")
    unsent = _total("unsentByType", "Replies the operating system refused to send.")
    denied = _total("deniedByType", "Requests the access policy refused.")
    limited = _total("limitedByType", "Replies withheld by the reply budgets.")
    held = _total("heldByType", "Replies held back while the node checked it may still answer.")


def _type(datagram: bytes) -> int:
    """A datagram's request type: its first byte (0 for an empty one)."""
    return datagram[0] if datagram else 0


@lru_cache(maxsize=65536)
def instanceReply(info: InstanceInfo) -> bytes:
    """The SVR_RESP answering CLNT_UCAST_INST for C{info} (cached: records are frozen)."""
    return frameResponseData(encodeInstance(info))


class ResolutionResponder(DatagramProtocol):
    """
    Answers [MC-SQLR] requests on one UDP port from an L{IRegistry}, or from
    C{answers}, a view of it (what L{srp.server.remote} gives an active).

    Unknown or hidden instances, and anything that is not a valid request
    (empty, malformed, unknown type, C{0x0A}, responses), get no reply: they
    are counted in L{ResponderStats} and logged at most once a second.

    @ivar mayAnswer: asked before each reply to a client, when set: L{False}
        holds the reply back.  The role that holds the port sets it when
        answering is only right while it still holds the role: a process
        that was stopped reads the datagrams that queued up before its
        timers run, so only a check of the clock at the reply catches an
        active (or an etcd leader) that was replaced while it did not run.
    """

    log = Logger()
    noisy = False

    def __init__(
        self, registry: IRegistry, clock: IReactorTime, stats: ResponderStats | None = None,
        cluster: ClusterHandler | None = None, access: AccessPolicy | None = None,
        limiter: ReplyLimiter | None = None, answers: IAnswers | None = None,
    ) -> None:
        self.registry = registry
        self.answers = answers if answers is not None else registry
        self.clock = clock
        self.stats = stats if stats is not None else ResponderStats()
        #: Where cluster messages (opcodes 0xA0-0xAF) go; without it they are
        #: malformed requests like any other unknown type.
        self.cluster = cluster
        self.access = access if access is not None else AccessPolicy()
        self.limiter = limiter
        self._lastLimitedLog = float("-inf")
        self._enumeration: tuple[int, bytes | None] = (-1, None)
        #: Replies to instance and DAC requests, by the request's exact bytes,
        #: for the generation of C{answers} in C{_repliesGeneration}.
        self._replies: dict[bytes, bytes] = {}
        self._repliesGeneration = -1
        self._lastMalformedLog = float("-inf")
        self._malformedUnlogged = 0
        self.mayAnswer: AnswerGate | None = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if self.limiter is not None and self.limiter.blocked(addr[0]):
            self.stats.limitedByType[_type(datagram)] += 1
            return
        if (not self.access.clients.open and not self.access.clients.permits(addr[0])
                and (self.cluster is None or not isClusterMessage(datagram))):
            # Cluster messages have an access list of their own.
            self.stats.deniedByType[_type(datagram)] += 1
            return
        generation = self.answers.generation
        if self._repliesGeneration != generation:
            self._replies.clear()
            self._repliesGeneration = generation
        reply = self._replies.get(datagram)
        if reply is None:
            if self.cluster is not None and isClusterMessage(datagram):
                self.cluster(datagram, (addr[0], addr[1]), self)
                return
            try:
                request = decodeRequest(datagram)
            except WireError as error:
                self._malformed(error, datagram, addr)
                return
            if isinstance(request, (BroadcastRequest, EnumerateRequest)) and (
                    not self.access.mayEnumerate(addr[0])):
                self.stats.deniedByType[datagram[0]] += 1
                return
            reply = self.replyTo(request)
            if reply is None:
                self.stats.ignoredByType[datagram[0]] += 1
                return
            if isinstance(request, (InstanceRequest, DACRequest)):
                if len(self._replies) >= MAX_CACHED_REPLIES:
                    self._replies.clear()
                self._replies[datagram] = reply
        if self.mayAnswer is not None and not self.mayAnswer():
            self.stats.heldByType[datagram[0]] += 1
            return
        if self.limiter is not None and not self.limiter.allow(addr[0], len(reply)):
            self._limited(datagram, addr)
            return
        try:
            self.transport.write(reply, addr)  # type: ignore[union-attr]
        except OSError as error:
            self.stats.unsentByType[datagram[0]] += 1
            self.log.warn(
                "Could not send a reply to {host}:{port}: {error}",
                host=addr[0], port=addr[1], error=error,
            )
            return
        self.stats.answeredByType[datagram[0]] += 1
        self.stats.replyBytes += len(reply)

    def replyTo(self, request: Request) -> bytes | None:
        """The reply to a decoded request, or L{None} if it gets none."""
        if isinstance(request, (BroadcastRequest, EnumerateRequest)):
            return self._enumerationReply()
        record = self.answers.lookup(request.instanceName)
        if record is None or record.hidden:
            return None
        if isinstance(request, DACRequest):
            return None if record.dacPort is None else DACResponse(record.dacPort).encode()
        return instanceReply(record.info)

    def _enumerationReply(self) -> bytes | None:
        cached, reply = self._enumeration
        generation = self.answers.generation
        if cached != generation:
            records = self.answers.visible()
            reply = None
            if records:
                data, omitted = encodeEnumeration([r.info for r in records])
                self.stats.omitted = omitted
                if omitted:
                    self.log.warn(
                        "Enumeration replies list {listed} of {total} instances: "
                        "the rest do not fit in one datagram",
                        listed=len(records) - omitted, total=len(records),
                    )
                reply = frameResponseData(data)
            self._enumeration = (generation, reply)
        return reply

    def _limited(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.stats.limitedByType[datagram[0]] += 1
        now = self.clock.seconds()
        if now - self._lastLimitedLog >= MALFORMED_LOG_INTERVAL * 10:
            self._lastLimitedLog = now
            self.log.warn("Reply budget exceeded (last: {host}); {count} replies withheld "
                          "so far: a flood, or raise [limits] in the configuration",
                          host=addr[0], count=self.stats.limited)

    def _malformed(self, error: WireError, datagram: bytes, addr: tuple[str, int]) -> None:
        self.stats.malformedByType[_type(datagram)] += 1
        now = self.clock.seconds()
        if now - self._lastMalformedLog < MALFORMED_LOG_INTERVAL:
            self._malformedUnlogged += 1
            return
        self.log.warn(
            "Ignored a malformed datagram from {host}:{port}: {error} "
            "({suppressed} more since the last such line)",
            host=addr[0], port=addr[1], error=str(error), suppressed=self._malformedUnlogged,
        )
        self._lastMalformedLog = now
        self._malformedUnlogged = 0
