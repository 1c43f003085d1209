"""The cluster messages: round trips, authentication and hostile bytes."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srp.wire.cluster import (
    HEADER_SIZE,
    MAX_MESSAGE,
    TAG_SIZE,
    ClusterWireError,
    Envelope,
    KeepAlive,
    clusterId,
    decodeEnvelope,
    isClusterMessage,
)
from srp.wire.errors import WireError
from srp.wire.mcsqlr import decodeRequest
from tests.strategies import envelopes

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
        (_envelope(version=2).encode(KEY), "version"),
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


def test_unknown_opcode_with_a_valid_tag_is_malformed() -> None:
    datagram = signed(struct.pack("<BBHIQIQH", 0xAF, 1, 0, clusterId("c"), 1, 1, 1, 0))
    with pytest.raises(ClusterWireError, match="unknown cluster opcode 0xAF") as caught:
        decodeEnvelope(datagram, KEY, clusterId("c"))
    assert caught.value.reason == "malformed"


def test_trailing_payload_bytes_are_malformed() -> None:
    datagram = signed(struct.pack("<BBHIQIQH", 0xA0, 1, 0, clusterId("c"), 1, 1, 1, 1) + b"x")
    with pytest.raises(ClusterWireError, match="follow the payload"):
        decodeEnvelope(datagram, KEY, clusterId("c"))
