"""
The MS-TDS PRELOGIN message, as far as instance verification needs it.

A client names the instance it wants in the INSTOPT option; the server
answers 0x00 when that is its name (or the client named none) and 0x01
when it is not.  This is how SQL Server itself confirms an instance name,
and what the C{tds} verifier of srp's client uses.
"""

from __future__ import annotations

import struct

from attrs import frozen

from srp.wire.errors import WireError

#: TDS packet types.
PRELOGIN = 0x12
TABULAR_RESULT = 0x04
#: PRELOGIN option tokens.
VERSION = 0x00
ENCRYPTION = 0x01
INSTOPT = 0x02
THREADID = 0x03
MARS = 0x04
TERMINATOR = 0xFF
#: ENCRYPTION values.
ENCRYPT_NOT_SUP = 0x02

_PACKET = struct.Struct(">BBHHBB")
_OPTION = struct.Struct(">BHH")
#: The largest PRELOGIN packet accepted.
MAX_PACKET = 4096


@frozen
class Prelogin:
    """A PRELOGIN structure: its options, token to value, in order."""

    options: tuple[tuple[int, bytes], ...]

    def get(self, token: int) -> bytes | None:
        """The value of option C{token}, or L{None}."""
        return next((value for t, value in self.options if t == token), None)

    def encode(self, packetType: int) -> bytes:
        """One TDS packet (end of message) of type C{packetType} carrying this structure."""
        offset = _OPTION.size * len(self.options) + 1
        index, data = b"", b""
        for token, value in self.options:
            index += _OPTION.pack(token, offset + len(data), len(value))
            data += value
        payload = index + bytes([TERMINATOR]) + data
        return _PACKET.pack(packetType, 0x01, _PACKET.size + len(payload), 0, 1, 0) + payload


def packetLength(header: bytes) -> int:
    """
    The length a TDS packet announces in its 8-byte header.

    @raise WireError: if the length is out of range.
    """
    if len(header) < _PACKET.size:
        raise WireError("TDS packet header is shorter than 8 bytes")
    length: int = _PACKET.unpack_from(header)[2]
    if not _PACKET.size <= length <= MAX_PACKET:
        raise WireError(f"TDS packet length {length} is out of range")
    return length


def decodePrelogin(packet: bytes, packetType: int) -> Prelogin:
    """
    Parse one whole TDS packet of type C{packetType} carrying a PRELOGIN structure.

    @raise WireError: if it is not one.
    """
    length = packetLength(packet)
    kind = packet[0]
    if kind != packetType:
        raise WireError(f"TDS packet type 0x{kind:02X}, expected 0x{packetType:02X}")
    if len(packet) != length:
        raise WireError(f"TDS packet says {length} bytes but has {len(packet)}")
    payload = packet[_PACKET.size:]
    options = []
    position = 0
    while True:
        if position >= len(payload):
            raise WireError("PRELOGIN option list has no terminator")
        if payload[position] == TERMINATOR:
            break
        if position + _OPTION.size > len(payload):
            raise WireError("PRELOGIN option list is cut short")
        token, offset, size = _OPTION.unpack_from(payload, position)
        if offset + size > len(payload):
            raise WireError(f"PRELOGIN option 0x{token:02X} points past the packet")
        options.append((token, payload[offset:offset + size]))
        position += _OPTION.size
    return Prelogin(tuple(options))


def preloginRequest(instance: str) -> bytes:
    """The PRELOGIN a client sends to ask for instance C{instance}."""
    return Prelogin((
        (VERSION, struct.pack(">IH", 0x10000000, 0)),
        (ENCRYPTION, bytes([ENCRYPT_NOT_SUP])),
        (INSTOPT, instance.encode("ascii") + b"\0"),
        (THREADID, struct.pack(">I", 0)),
        (MARS, b"\0"),
    )).encode(PRELOGIN)


def preloginResponse(instanceValid: bool) -> bytes:
    """The PRELOGIN answer of a server, saying whether the client named it rightly."""
    return Prelogin((
        (VERSION, struct.pack(">IH", 0x10000000, 0)),
        (ENCRYPTION, bytes([ENCRYPT_NOT_SUP])),
        (INSTOPT, b"\x00" if instanceValid else b"\x01"),
    )).encode(TABULAR_RESULT)


def requestedInstance(request: Prelogin) -> str:
    """The instance name a client's PRELOGIN asks for ("" when none)."""
    value = request.get(INSTOPT) or b"\0"
    try:
        return value.split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("PRELOGIN INSTOPT is not ASCII") from None
