"""The cluster messages: round trips, authentication and hostile bytes."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st

from srp.records import InstanceInfo, Registration
from srp.wire.cluster import (
    HEADER_SIZE,
    MAX_COUNT,
    MAX_MESSAGE,
    TAG_SIZE,
    ClusterMessage,
    ClusterWireError,
    Envelope,
    Join,
    KeepAlive,
    Probe,
    ReJoin,
    StatusQuery,
    clusterId,
    decodeEnvelope,
    isClusterMessage,
    layoutVersion,
    registrationsDigest,
)
from srp.wire.errors import WireError
from srp.wire.instances import encodeInstance
from srp.wire.mcsqlr import decodeRequest
from tests.strategies import envelopes, joinParts

KEY = b"k" * 32


@given(envelopes, st.sampled_from([b"", KEY]))
def test_round_trip(envelope: Envelope, key: bytes) -> None:
    datagram = envelope.encode(key)
    assert isClusterMessage(datagram)
    assert decodeEnvelope(datagram, key, envelope.cluster) == envelope


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_cluster_wire_error(data: bytes) -> None:
    try:
        decodeEnvelope(data, KEY, 7)
    except ClusterWireError as e:
        assert e.reason in {"truncated", "oversized", "version", "tag", "cluster", "malformed"}


@given(envelopes, st.data())
def test_any_flipped_bit_fails_the_tag(envelope: Envelope, data: st.DataObject) -> None:
    datagram = bytearray(envelope.encode(KEY))
    position = data.draw(st.integers(0, len(datagram) - 1))
    datagram[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ClusterWireError) as caught:
        decodeEnvelope(bytes(datagram), KEY, envelope.cluster)
    assert caught.value.reason in {"tag", "version", "truncated"}


@given(envelopes)
def test_mc_sqlr_decoder_refuses_cluster_messages(envelope: Envelope) -> None:
    with pytest.raises(WireError, match="unknown request type 0xA"):
        decodeRequest(envelope.encode(KEY))


def _envelope(**kw: object) -> Envelope:
    values: dict[str, object] = {"message": KeepAlive(3), "cluster": clusterId("c"),
                                 "sender": 1, "epoch": 2, "sequence": 3} | kw
    return Envelope(**values)  # type: ignore[arg-type]


def test_header_layout() -> None:
    datagram = _envelope().encode(b"")
    assert struct.unpack_from("<BBHIQIQH", datagram) == (0xA3, 1, 0, clusterId("c"), 1, 2, 3, 6)
    assert len(datagram) == HEADER_SIZE + 6 + TAG_SIZE == 30 + 6 + 32


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (_envelope().encode(b"other key"), "tag"),
        (_envelope(cluster=clusterId("d")).encode(KEY), "cluster"),
        (_envelope(message=Probe(), version=2).encode(KEY), "version"),
        (_envelope(version=3).encode(KEY), "version"),
        (_envelope().encode(KEY)[:-1], "truncated"),
        (_envelope().encode(KEY)[:20], "truncated"),
        (b"\xa3" * (MAX_MESSAGE + 1), "oversized"),
        (bytes([0xA0]) + _envelope().encode(KEY)[1:], "tag"),
    ],
)
def test_rejections_name_their_reason(datagram: bytes, reason: str) -> None:
    with pytest.raises(ClusterWireError) as caught:
        decodeEnvelope(datagram, KEY, clusterId("c"))
    assert caught.value.reason == reason


def signed(body: bytes) -> bytes:
    return body + hmac.digest(KEY, body, hashlib.sha256)


def test_unknown_message_kind_with_a_valid_tag_is_malformed() -> None:
    # Every opcode of 0xA0-0xAF is taken (0xAF by the subscription
    # messages): an unknown message is an unknown kind of 0xAF.
    datagram = signed(struct.pack("<BBHIQIQH", 0xAF, 1, 0, clusterId("c"), 1, 1, 1, 1)
                      + b"\x09")
    with pytest.raises(ClusterWireError, match="unknown subscription message kind 9") as caught:
        decodeEnvelope(datagram, KEY, clusterId("c"))
    assert caught.value.reason == "malformed"


def test_trailing_payload_bytes_are_malformed() -> None:
    datagram = signed(struct.pack("<BBHIQIQH", 0xA0, 1, 0, clusterId("c"), 1, 1, 1, 1) + b"x")
    with pytest.raises(ClusterWireError, match="follow the payload"):
        decodeEnvelope(datagram, KEY, clusterId("c"))


REGISTRATION = Registration(InstanceInfo("H", "SALES", tcp=1433), nodeId=9)


@pytest.mark.parametrize(
    ("message", "version"),
    [(Join((REGISTRATION,)), 1), (ReJoin(), 1), (StatusQuery(), 1),
     (Join((REGISTRATION,), 5, 1, 2), 2), (ReJoin(5, (1, 3)), 2), (StatusQuery(0, 700), 2),
     (StatusQuery(3, 0), 2), (KeepAlive(3), 1)],
)
def test_each_message_goes_at_the_lowest_version_that_carries_it(
        message: ClusterMessage, version: int) -> None:
    datagram = _envelope(message=message).encode(KEY)
    assert datagram[1] == version == layoutVersion(message)
    assert decodeEnvelope(datagram, KEY, clusterId("c")).message == message


def test_a_whole_join_is_what_version_1_nodes_send() -> None:
    datagram = _envelope(message=Join((REGISTRATION,))).encode(KEY)
    payload = datagram[HEADER_SIZE:-TAG_SIZE]
    record = encodeInstance(REGISTRATION.info, limit=0xFFFF)
    assert payload == struct.pack("<HQHBHH", 1, 9, 0, 0, 0, len(record)) + record


def _v2(opcode: int, payload: bytes, version: int = 2) -> bytes:
    return signed(struct.pack("<BBHIQIQH", opcode, version, 0, clusterId("c"), 1, 1, 1,
                              len(payload)) + payload)


_PART = Join((REGISTRATION,), 5, 1, 2).payload()


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (_v2(0xA1, b"\0\0\0\0" + _PART[4:]), "malformed"),  # generation 0
        (_v2(0xA1, _PART[:4] + b"\2\0\2\0" + _PART[8:]), "malformed"),  # part 2 of 2
        (_v2(0xA1, _PART[:4] + b"\0\0\0\0" + _PART[8:]), "malformed"),  # part 0 of 0
        (_v2(0xA1, _PART[:8] + b"\0\0"), "malformed"),  # no registration
        (_v2(0xA1, _PART[:-1]), "malformed"),
        (_v2(0xA5, b"\0\0\0\0\1\0\1\0"), "malformed"),  # ReJoin of generation 0
        (_v2(0xA5, b"\5\0\0\0\0\0"), "malformed"),  # ReJoin naming no part
        (_v2(0xA5, b"\5\0\0\0\2\0\1\0"), "malformed"),  # fewer parts than counted
        (_v2(0xAB, b"\0" * 8), "malformed"),  # the first page is version 1
        (_v2(0xAB, b"\0" * 7), "malformed"),
        (_v2(0xA3, b"\3\0\0\0\0\0"), "malformed"),  # a version 2 KeepAlive lacks its digest
        (_v2(0xA3, b"\3\0" + b"\0" * 8), "malformed"),  # ... or carries digest 0
        (_v2(0xA4, b"\0" * 6), "version"),  # KeepAliveAck has no version 2
        (_v2(0xA0, b""), "version"),
        (_v2(0xA1, _PART, version=3), "version"),
        (_v2(0xA1, _PART, version=0), "version"),
    ],
)
def test_version_2_layouts_are_checked(datagram: bytes, reason: str) -> None:
    with pytest.raises(ClusterWireError) as caught:
        decodeEnvelope(datagram, KEY, clusterId("c"))
    assert caught.value.reason == reason


@given(joinParts)
def test_a_join_part_round_trips_at_version_2(part: Join) -> None:
    datagram = _envelope(message=part).encode(KEY)
    assert datagram[1] == 2
    assert decodeEnvelope(datagram, KEY, clusterId("c")) == _envelope(message=part)


def test_keepalive_counts_saturate() -> None:
    assert MAX_COUNT == 0xFFFF
    with pytest.raises(WireError, match="out of range"):
        _envelope(message=KeepAlive(MAX_COUNT + 1)).encode(KEY)


def test_keepalive_carries_a_digest_in_version_2() -> None:
    registrations = (Registration(InstanceInfo("H", "A", tcp=1), nodeId=5),
                     Registration(InstanceInfo("H", "B", tcp=2), nodeId=5))
    digest = registrationsDigest(registrations)
    assert digest == registrationsDigest(registrations[::-1]) != 0
    assert digest != registrationsDigest((evolve(registrations[0], down=True),
                                          registrations[1]))
    sent = _envelope(message=KeepAlive(2, 7, digest))
    assert sent.version == 2
    assert decodeEnvelope(sent.encode(KEY), KEY, clusterId("c")).message == KeepAlive(2, 7, digest)
    assert _envelope().version == 1

