"""The [MC-SQLR] responder, driven through a fake datagram transport on a Clock."""

from __future__ import annotations

import errno
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from srp.records import Registration
from srp.server.registry import Registry
from srp.server.responder import ResolutionResponder
from srp.testing import connectDatagram, exchange
from srp.wire import (
    DACResponse,
    InstanceInfo,
    InstancesResponse,
    decodeResponse,
)

SALES = Registration(InstanceInfo("DB1", "SALES", tcp=50001), dacPort=50011)
REPORTS = Registration(InstanceInfo("DB1", "REPORTS", tcp=50002, np="\\\\DB1\\pipe\\r"))
HIDDEN = Registration(InstanceInfo("DB1", "AUDIT", tcp=50003), hidden=True, dacPort=50013)


def makeResponder(*records: Registration) -> ResolutionResponder:
    responder = ResolutionResponder(Registry(records or (SALES, REPORTS, HIDDEN)), Clock())
    connectDatagram(responder)
    return responder


class AnswerTests(SynchronousTestCase):
    """Well-formed requests get the reply [MC-SQLR] prescribes."""

    def test_instance_request_any_case(self) -> None:
        responder = makeResponder()
        for name in (b"SALES", b"sales", b"SaLeS\x00"):
            [reply] = exchange(responder, b"\x04" + name)
            self.assertEqual(decodeResponse(reply), InstancesResponse((SALES.info,)))
        self.assertEqual(responder.stats.answered, 3)

    def test_enumeration_lists_visible_instances_sorted(self) -> None:
        responder = makeResponder()
        for request in (b"\x02", b"\x03"):
            [reply] = exchange(responder, request)
            self.assertEqual(decodeResponse(reply),
                             InstancesResponse((REPORTS.info, SALES.info)))

    def test_dac_port(self) -> None:
        [reply] = exchange(makeResponder(), b"\x0f\x01sales\x00")
        self.assertEqual(reply, b"\x05\x06\x00\x01" + (50011).to_bytes(2, "little"))
        self.assertEqual(decodeResponse(reply), DACResponse(50011))

    def test_hidden_unknown_and_no_dac_get_no_reply(self) -> None:
        responder = makeResponder()
        for request in (b"\x04AUDIT", b"\x0f\x01AUDIT\x00", b"\x04NOPE", b"\x0f\x01REPORTS\x00"):
            self.assertEqual(exchange(responder, request), [], request)
        self.assertEqual(responder.stats.ignored, 4)
        self.assertEqual(responder.stats.answered, 0)

    def test_enumeration_of_nothing_visible_gets_no_reply(self) -> None:
        responder = makeResponder(HIDDEN)
        self.assertEqual(exchange(responder, b"\x03"), [])
        self.assertEqual(responder.stats.ignored, 1)

    def test_enumeration_follows_registry_changes(self) -> None:
        responder = makeResponder()
        exchange(responder, b"\x03")
        responder.registry.unregister("sales", 0)
        [reply] = exchange(responder, b"\x03")
        self.assertEqual(decodeResponse(reply), InstancesResponse((REPORTS.info,)))

    def test_duplicate_requests_each_answered(self) -> None:
        responder = makeResponder()
        replies = [exchange(responder, b"\x04SALES\x00") for _ in range(16)]
        self.assertEqual({r[0] for r in replies}, {replies[0][0]})
        self.assertEqual(responder.stats.answered, 16)

    def test_large_registry_enumeration_counts_omitted(self) -> None:
        records = [Registration(InstanceInfo("DB1", f"I{n:05d}", tcp=1000 + n))
                   for n in range(10000)]
        responder = makeResponder(*records)
        [reply] = exchange(responder, b"\x03")
        listed = len(decodeResponse(reply).instances)  # type: ignore[union-attr]
        self.assertLessEqual(len(reply), 16383)
        self.assertEqual(responder.stats.omitted, 10000 - listed)


class SilenceTests(SynchronousTestCase):
    """Nothing malformed is ever answered, and each is counted and logged."""

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def test_malformed_is_counted_logged_and_unanswered(self) -> None:
        responder = makeResponder()
        for datagram in (b"", b"\x0a", b"\x05\x00\x00", b"\x04" + b"A" * 64, b"\x08"):
            self.assertEqual(exchange(responder, datagram), [])
        self.assertEqual(responder.stats.malformed, 5)
        warnings = [e for e in self.events if "malformed" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1, "one line a second at most")
        self.assertEqual(warnings[0]["host"], "192.0.2.1")
        self.assertIn("empty datagram", warnings[0]["error"])

    def test_log_lines_resume_after_the_interval_with_the_suppressed_count(self) -> None:
        responder = makeResponder()
        for _ in range(3):
            exchange(responder, b"\x0a")
        assert isinstance(responder.clock, Clock)
        responder.clock.advance(1.0)
        exchange(responder, b"\x0a")
        warnings = [e for e in self.events if "malformed" in e.get("log_format", "")]
        self.assertEqual([w["suppressed"] for w in warnings], [0, 2])

    def test_send_failure_is_counted_not_raised(self) -> None:
        responder = makeResponder()
        transport = responder.transport
        transport.refuse = OSError(errno.ENOBUFS, "No buffer space")  # type: ignore[union-attr]
        self.assertEqual(exchange(responder, b"\x04SALES"), [])
        self.assertEqual(responder.stats.unsent, 1)
        self.assertEqual(responder.stats.answered, 0)


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_any_datagram_never_raises_and_malformed_never_answered(data: bytes) -> None:
    responder = makeResponder()
    replies = exchange(responder, data)
    stats = responder.stats
    assert stats.answered + stats.ignored + stats.malformed == 1
    if stats.malformed:
        assert replies == []
    for reply in replies:
        assert reply[0] == 0x05


class GateTests(SynchronousTestCase):
    """C{mayAnswer} holds every reply back, remembered ones too, while it says no."""

    def test_replies_are_held_while_the_gate_is_shut(self) -> None:
        responder = makeResponder()
        exchange(responder, b"\x04SALES")  # remembered
        open = [False]
        responder.mayAnswer = lambda: open[0]
        self.assertEqual(exchange(responder, b"\x04SALES"), [])
        self.assertEqual(exchange(responder, b"\x04REPORTS"), [])
        self.assertEqual((responder.stats.heldByType[0x04], responder.stats.held), (2, 2))
        open[0] = True
        [reply] = exchange(responder, b"\x04SALES")
        self.assertEqual(decodeResponse(reply), InstancesResponse((SALES.info,)))
        self.assertEqual(responder.stats.answered, 2)


class ReplyCacheTests(SynchronousTestCase):
    """Replies are remembered by request bytes, and forgotten when the registry changes."""

    def test_a_moved_instance_is_answered_with_its_new_port(self) -> None:
        responder = makeResponder()
        exchange(responder, b"\x04SALES")
        responder.registry.register(Registration(InstanceInfo("DB1", "SALES", tcp=50999)))
        [reply] = exchange(responder, b"\x04SALES")
        [info] = decodeResponse(reply).instances  # type: ignore[union-attr]
        self.assertEqual(info.tcp, 50999)

    def test_the_cache_stays_bounded(self) -> None:
        responder = makeResponder()
        names = ["".join(c.upper() if n >> i & 1 else c for i, c in enumerate("sales"))
                 for n in range(32)]
        for name in names * 3:
            exchange(responder, b"\x04" + name.encode())
        self.assertEqual(len(responder._replies), 32)
        self.assertEqual(responder.stats.answered, 96)

    def test_unknown_names_are_not_remembered(self) -> None:
        responder = makeResponder()
        for n in range(100):
            exchange(responder, b"\x04NOPE%d" % n)
        self.assertEqual(responder._replies, {})
