"""
The [MC-SQLR] messages (SQL Server Resolution Protocol, UDP port 1434).

Requests travel from clients to the resolver, responses back.  Each message
is an attrs frozen class with an C{encode} method; L{decodeRequest} and
L{decodeResponse} turn bytes into them and raise only L{WireError}.
"""

from __future__ import annotations

import struct

from attrs import field, frozen

from srp.wire.errors import WireError
from srp.wire.instances import (
    MAX_INSTANCE_NAME,
    InstanceInfo,
    checkInstanceName,
    checkPort,
    decodeInstances,
    encodeInstances,
)

#: The UDP port a SQL Server Browser (and every srp node) answers on.
BROWSER_PORT = 1434

CLNT_BCAST_EX = 0x02
CLNT_UCAST_EX = 0x03
CLNT_UCAST_INST = 0x04
SVR_RESP = 0x05
CLNT_UCAST_DAC = 0x0F
#: Protocol version byte of CLNT_UCAST_DAC and of the DAC reply.
DAC_PROTOCOL_VERSION = 0x01
#: The largest UDP payload that IPv4 can carry.
MAX_DATAGRAM = 65507

_HEADER = struct.Struct("<BH")
_DAC_REPLY = struct.Struct("<BHBH")


def _name(_: object, __: object, value: str) -> None:
    checkInstanceName(value)


@frozen
class BroadcastRequest:
    """CLNT_BCAST_EX: every instance of every server that hears the broadcast."""

    def encode(self) -> bytes:
        """The one byte C{02}."""
        return bytes([CLNT_BCAST_EX])


@frozen
class EnumerateRequest:
    """CLNT_UCAST_EX: every instance of one server."""

    def encode(self) -> bytes:
        """The one byte C{03}."""
        return bytes([CLNT_UCAST_EX])


@frozen
class InstanceRequest:
    """CLNT_UCAST_INST: one named instance of one server."""

    instanceName: str = field(validator=_name)

    def encode(self) -> bytes:
        """C{04}, the name, and the terminating NUL."""
        return bytes([CLNT_UCAST_INST]) + self.instanceName.encode("ascii") + b"\0"


@frozen
class DACRequest:
    """CLNT_UCAST_DAC: the dedicated administrator connection port of an instance."""

    instanceName: str = field(validator=_name)

    def encode(self) -> bytes:
        """C{0F 01}, the name, and the terminating NUL."""
        return (
            bytes([CLNT_UCAST_DAC, DAC_PROTOCOL_VERSION])
            + self.instanceName.encode("ascii")
            + b"\0"
        )


Request = BroadcastRequest | EnumerateRequest | InstanceRequest | DACRequest


@frozen
class InstancesResponse:
    """SVR_RESP listing instances (the reply to 02, 03 and 04)."""

    instances: tuple[InstanceInfo, ...]

    def encode(self) -> bytes:
        """C{05}, RESP_SIZE and RESP_DATA, with no size limit applied."""
        return frameResponseData(encodeInstances(self.instances))


@frozen
class DACResponse:
    """SVR_RESP to CLNT_UCAST_DAC: the instance's DAC TCP port."""

    port: int

    def __attrs_post_init__(self) -> None:
        checkPort("DAC port", self.port)

    def encode(self) -> bytes:
        """C{05 06 00 01} and the port."""
        return _DAC_REPLY.pack(SVR_RESP, _DAC_REPLY.size, DAC_PROTOCOL_VERSION, self.port)


Response = InstancesResponse | DACResponse


def frameResponseData(data: bytes) -> bytes:
    """
    Wrap RESP_DATA in an SVR_RESP header (C{05} and its exact length).

    @raise WireError: if C{data} does not fit in one datagram.
    """
    if _HEADER.size + len(data) > MAX_DATAGRAM:
        raise WireError(f"RESP_DATA of {len(data)} bytes does not fit in one datagram")
    return _HEADER.pack(SVR_RESP, len(data)) + data


def _decodeName(payload: bytes, what: str) -> str:
    if payload.endswith(b"\0"):
        payload = payload[:-1]
    if not payload:
        raise WireError(f"{what} carries no instance name")
    if len(payload) > MAX_INSTANCE_NAME:
        raise WireError(
            f"{what} instance name is {len(payload)} bytes; at most {MAX_INSTANCE_NAME} allowed"
        )
    if b"\0" in payload:
        raise WireError(f"{what} instance name contains a NUL byte")
    try:
        name = payload.decode("ascii")
    except UnicodeDecodeError:
        raise WireError(f"{what} instance name is not ASCII") from None
    checkInstanceName(name)
    return name


def decodeRequest(datagram: bytes) -> Request:
    """
    Parse a datagram sent to the resolver.

    @raise WireError: if it is empty, of an unknown type, or malformed.
    """
    if not datagram:
        raise WireError("empty datagram")
    kind = datagram[0]
    if kind in (CLNT_BCAST_EX, CLNT_UCAST_EX):
        if len(datagram) != 1:
            raise WireError(f"request type 0x{kind:02X} has {len(datagram) - 1} trailing bytes")
        return BroadcastRequest() if kind == CLNT_BCAST_EX else EnumerateRequest()
    if kind == CLNT_UCAST_INST:
        return InstanceRequest(_decodeName(datagram[1:], "CLNT_UCAST_INST"))
    if kind == CLNT_UCAST_DAC:
        if len(datagram) < 2 or datagram[1] != DAC_PROTOCOL_VERSION:
            raise WireError("CLNT_UCAST_DAC has no protocol version 0x01")
        return DACRequest(_decodeName(datagram[2:], "CLNT_UCAST_DAC"))
    raise WireError(f"unknown request type 0x{kind:02X}")


def decodeResponse(datagram: bytes) -> Response:
    """
    Parse a datagram sent back by a resolver.

    @raise WireError: if it is not an SVR_RESP, its RESP_SIZE does not match
        its length, or its RESP_DATA is malformed.
    """
    if len(datagram) < _HEADER.size:
        raise WireError(f"response of {len(datagram)} bytes is shorter than its header")
    kind, size = _HEADER.unpack_from(datagram)
    if kind != SVR_RESP:
        raise WireError(f"response type is 0x{kind:02X}, not SVR_RESP (0x05)")
    if size == _DAC_REPLY.size and len(datagram) == _DAC_REPLY.size:
        _, _, version, port = _DAC_REPLY.unpack(datagram)
        if version != DAC_PROTOCOL_VERSION:
            raise WireError(f"DAC response has protocol version {version}, not 1")
        return DACResponse(port)
    if len(datagram) != _HEADER.size + size:
        raise WireError(
            f"RESP_SIZE says {size} bytes but {len(datagram) - _HEADER.size} follow the header"
        )
    return InstancesResponse(tuple(decodeInstances(datagram[_HEADER.size :])))
