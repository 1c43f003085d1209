"""The [MC-SQLR] codec: round trips, size rules and hostile bytes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srp.wire import (
    BroadcastRequest,
    DACRequest,
    DACResponse,
    EnumerateRequest,
    InstanceInfo,
    InstanceRequest,
    InstancesResponse,
    ViaAddress,
    ViaInfo,
    WireError,
    decodeRequest,
    decodeResponse,
)
from srp.wire.instances import (
    compact,
    decodeInstances,
    encodeEnumeration,
    encodeInstance,
)
from srp.wire.mcsqlr import frameResponseData
from tests.strategies import instanceNames, instances, ports

requests = st.one_of(
    st.just(BroadcastRequest()),
    st.just(EnumerateRequest()),
    st.builds(InstanceRequest, instanceNames),
    st.builds(DACRequest, instanceNames),
)
responses = st.one_of(
    st.builds(DACResponse, ports),
    st.lists(instances, min_size=1, max_size=5).map(lambda i: InstancesResponse(tuple(i))),
)


@given(requests)
def test_request_round_trip(request: object) -> None:
    assert decodeRequest(request.encode()) == request  # type: ignore[attr-defined]


@given(responses)
def test_response_round_trip(response: InstancesResponse | DACResponse) -> None:
    assert decodeResponse(response.encode()) == response


@given(st.binary(max_size=600))
def test_random_request_bytes_raise_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decodeRequest(data)


@given(st.binary(max_size=600))
def test_random_response_bytes_raise_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decodeResponse(data)


@given(responses, st.data())
def test_mutated_responses_raise_only_wire_error(
    response: InstancesResponse | DACResponse, data: st.DataObject
) -> None:
    encoded = bytearray(response.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    for candidate in (bytes(encoded), bytes(encoded[:cut])):
        with contextlib.suppress(WireError):
            decodeResponse(candidate)


def test_instance_request_accepts_name_without_nul() -> None:
    assert decodeRequest(b"\x04SALES") == InstanceRequest("SALES")
    assert decodeRequest(b"\x04SALES\x00") == InstanceRequest("SALES")


@pytest.mark.parametrize(
    ("datagram", "complaint"),
    [
        (b"", "empty"),
        (b"\x0a", "unknown request type 0x0A"),
        (b"\x05\x00\x00", "unknown request type 0x05"),
        (b"\x04", "no instance name"),
        (b"\x04\x00", "no instance name"),
        (b"\x04" + b"A" * 33, "33 bytes"),
        (b"\x04" + b"A" * 65535, "65535 bytes"),
        (b"\x04A\x00B", "NUL"),
        (b"\x04\xff\xfe", "not ASCII"),
        (b"\x04A;B", "';'"),
        (b"\x0f\x02SALES\x00", "protocol version"),
        (b"\x0f", "protocol version"),
        (b"\x03\x03", "trailing"),
    ],
)
def test_malformed_requests_say_what_is_wrong(datagram: bytes, complaint: str) -> None:
    with pytest.raises(WireError, match=complaint):
        decodeRequest(datagram)


@pytest.mark.parametrize(
    "name", ["SA;LES", "SALÉS", "", "A" * 33],
)
def test_unencodable_instance_names_are_refused_at_build_time(name: str) -> None:
    with pytest.raises(WireError, match="instance name"):
        InstanceInfo("HOST", name, tcp=1433)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"serverName": "HO;ST"}, "server name"),
        ({"serverName": "HÖST"}, "not ASCII"),
        ({"version": "16;0"}, "version"),
        ({"np": "\\\\H\\pipe\\a;b"}, "pipe name"),
        ({"tcp": 0}, "tcp port"),
        ({"tcp": 65536}, "tcp port"),
        ({"other": (("rpc", "a;b"),)}, "rpc value"),
    ],
)
def test_unencodable_values_are_refused_at_build_time(
    kwargs: dict[str, object], complaint: str
) -> None:
    values: dict[str, object] = {"serverName": "HOST", "instanceName": "SALES"} | kwargs
    with pytest.raises(WireError, match=complaint):
        InstanceInfo(**values)  # type: ignore[arg-type]


def test_resp_data_layout_matches_mc_sqlr() -> None:
    info = InstanceInfo(
        "DB1", "SALES", "16.0.1000.6", tcp=1433, np="\\\\DB1\\pipe\\sql\\query",
        via=ViaInfo("DB1", (ViaAddress("0", 1433), ViaAddress("1", 1434))),
    )
    data = b"".join([
        b"ServerName;DB1;InstanceName;SALES;IsClustered;No;Version;16.0.1000.6;",
        b"tcp;1433;np;\\\\DB1\\pipe\\sql\\query;via;DB1,0:1433,1:1434;;",
    ])
    assert encodeInstance(info) == data
    assert InstancesResponse((info,)).encode() == b"\x05" + struct.pack("<H", len(data)) + data


def test_dac_reply_layout() -> None:
    assert DACResponse(1434).encode() == b"\x05\x06\x00\x01\x9a\x05"
    assert DACRequest("SALES").encode() == b"\x0f\x01SALES\x00"


def test_single_instance_reply_fits_in_1023_bytes_with_its_header() -> None:
    longPipe = "\\\\DB1\\pipe\\" + "p" * 900
    info = InstanceInfo("DB1", "SALES", tcp=1433, np=longPipe,
                        via=ViaInfo("DB1", tuple(ViaAddress(str(n), 1000 + n) for n in range(20))))
    data = encodeInstance(info)
    assert len(frameResponseData(data)) <= 1023
    [decoded] = decodeInstances(data)
    assert decoded.tcp == 1433
    assert decoded.np == longPipe
    assert decoded.via is None


def test_tcp_comes_before_np_and_nothing_like_tcp_earlier() -> None:
    info = InstanceInfo("tcp", "tcp", tcp=5, np="np")
    text = encodeInstance(info).decode()
    assert text.index("InstanceName;") < text.index(";tcp;5;") < text.index(";np;np;")


def _many(count: int, pipe: bool = True) -> list[InstanceInfo]:
    return [
        InstanceInfo("DB1", f"INST{n:05d}", tcp=10000 + n,
                     np=f"\\\\DB1\\pipe\\MSSQL$INST{n:05d}\\sql\\query" if pipe else None)
        for n in range(count)
    ]


def test_enumeration_fits_in_full_form_when_small() -> None:
    infos = _many(10)
    data, omitted = encodeEnumeration(infos)
    assert omitted == 0
    assert decodeInstances(data) == infos


def test_enumeration_falls_back_to_compact_form_under_4096() -> None:
    infos = _many(40)
    data, omitted = encodeEnumeration(infos)
    assert omitted == 0
    assert len(frameResponseData(data)) <= 4096
    assert decodeInstances(data) == [compact(i) for i in infos]


def test_enumeration_of_a_large_registry_stops_where_drivers_stop_reading() -> None:
    infos = _many(10000, pipe=False)
    data, omitted = encodeEnumeration(infos)
    decoded = decodeInstances(data)
    assert 16000 < len(frameResponseData(data)) <= 16383
    assert omitted == 10000 - len(decoded) > 0
    assert decoded == infos[: len(decoded)]


def test_compact_keeps_the_only_protocol() -> None:
    info = InstanceInfo("DB1", "P", np="\\\\DB1\\pipe\\p")
    assert compact(info).np == "\\\\DB1\\pipe\\p"


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"\x05\x10\x00abc", "RESP_SIZE says 16"),
        (b"\x04\x00\x00", "not SVR_RESP"),
        (b"\x05\x03\x00;;;", "empty record"),
        (b"\x05\x06\x00\x02\x00\x01", "protocol version 2"),
        (frameResponseData(b"ServerName;A;;"), "lacks InstanceName"),
        (frameResponseData(b"ServerName;A;InstanceName;B;tcp;x;;"), "not a number"),
        (frameResponseData(b"ServerName;A;InstanceName;B;tcp;1;tcp;2;;"), "repeats"),
        (frameResponseData(b"ServerName;A;InstanceName;B;IsClustered;Maybe;;"), "IsClustered"),
        (frameResponseData(b"ServerName;A;InstanceName;B;"), "does not end"),
        (frameResponseData(b"ServerName;A;InstanceName;B;via;X,0;;"), "NIC:PORT"),
        (frameResponseData("ServerName;Ä;;".encode("latin-1")), "not ASCII"),
    ],
)
def test_malformed_responses_say_what_is_wrong(data: bytes, complaint: str) -> None:
    with pytest.raises(WireError, match=complaint):
        decodeResponse(data)


def test_unknown_protocols_from_a_real_browser_are_kept() -> None:
    data = frameResponseData(
        b"ServerName;W;InstanceName;MSSQLSERVER;IsClustered;No;Version;8.00.194;"
        b"tcp;1433;np;\\\\W\\pipe\\sql\\query;rpc;W;spx;W;adsp;SQL2000;;"
    )
    [info] = decodeResponse(data).instances  # type: ignore[union-attr]
    assert info.tcp == 1433
    assert info.other == (("rpc", "W"), ("spx", "W"), ("adsp", "SQL2000"))
