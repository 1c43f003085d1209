"""
The frames of srp's emulated VIA transport: a connect handshake, then DATA,
CREDIT and CLOSE frames over a byte stream.

Each side opens with a L{Handshake} that announces the receive buffers it
has posted (how many, and how big); the client's is a CONNECT, the server's
an ACCEPT.  A server may answer a CONNECT with a L{Close} instead, to refuse
the connection.  After the handshakes every frame is a 5-byte header (type,
then a little-endian uint32) and, for DATA and CLOSE, that many bytes.  The
byte layout is specified in C{docs/transports.md}.

L{FrameDecoder} parses the frames one at a time and raises only
L{ViaWireError}, a L{WireError}.
"""

from __future__ import annotations

import struct

from attrs import field, frozen

from srp.wire.errors import WireError

#: The first eight bytes of every handshake: a NUL (no text protocol starts
#: with one), then C{SRP-VIA}.
MAGIC = b"\x00SRP-VIA"
#: The version of the frame layout this module speaks.
VERSION = 1
#: Handshake kinds: the client's request and the server's answer.
CONNECT = 1
ACCEPT = 2
#: Frame types.
DATA = 0x01
CREDIT = 0x02
CLOSE = 0x03
#: Most receive buffers one side may post (the field is a uint16).
MAX_RECEIVES = 0xFFFF
#: Largest receive buffer one side may post: 16 MiB.
MAX_BUFFER_SIZE = 1 << 24
#: Longest reason a CLOSE frame carries, in bytes.
MAX_REASON = 1024

_HANDSHAKE = struct.Struct("<8sBBHI")
HANDSHAKE_SIZE = _HANDSHAKE.size
#: The 5-byte header of every frame after the handshake: the type, then a
#: little-endian uint32 (a DATA or CLOSE frame's length, a CREDIT frame's
#: count).  Its C{pack} and C{unpack_from} are the one codec of frame
#: headers: L{FrameDecoder} and the via transport's fast path both use them.
FRAME_HEADER = struct.Struct("<BI")
HEADER_SIZE = FRAME_HEADER.size

_KINDS = {CONNECT: "CONNECT", ACCEPT: "ACCEPT"}


class ViaWireError(WireError):
    """Bytes that are not a valid VIA handshake or frame; the message says why."""


def _receives(_: object, __: object, value: int) -> None:
    if not 1 <= value <= MAX_RECEIVES:
        raise ViaWireError(f"{value} posted receives is out of range (1-{MAX_RECEIVES})")


def _bufferSize(_: object, __: object, value: int) -> None:
    if not 1 <= value <= MAX_BUFFER_SIZE:
        raise ViaWireError(f"a receive buffer of {value} bytes is out of range "
                           f"(1-{MAX_BUFFER_SIZE})")


def _kind(_: object, __: object, value: int) -> None:
    if value not in _KINDS:
        raise ViaWireError(f"handshake kind {value} is neither CONNECT (1) nor ACCEPT (2)")


def _version(_: object, __: object, value: int) -> None:
    if value != VERSION:
        raise ViaWireError(f"the peer speaks VIA emulation version {value}; "
                           f"this side speaks version {VERSION}")


def kindName(kind: int) -> str:
    """C{CONNECT} or C{ACCEPT}, for messages."""
    return _KINDS.get(kind, str(kind))


@frozen
class Handshake:
    """
    The first bytes each side sends: the receive buffers it has posted.

    C{receives} buffers of C{bufferSize} bytes each: the peer may send one
    DATA frame per posted buffer, of at most C{bufferSize} bytes.
    """

    kind: int = field(validator=_kind)
    receives: int = field(validator=_receives)
    bufferSize: int = field(validator=_bufferSize)
    version: int = field(default=VERSION, validator=_version)

    def encode(self) -> bytes:
        """The handshake's 16 bytes."""
        return _HANDSHAKE.pack(MAGIC, self.version, self.kind, self.receives, self.bufferSize)


@frozen
class Data:
    """One message: at most the peer's posted buffer size, and one credit."""

    payload: bytes

    def encode(self) -> bytes:
        """The frame: header and payload."""
        return dataHeader(len(self.payload)) + self.payload


def _count(_: object, __: object, value: int) -> None:
    if not 1 <= value <= MAX_RECEIVES:
        raise ViaWireError(f"a CREDIT frame returning {value} credits is out of range "
                           f"(1-{MAX_RECEIVES})")


@frozen
class Credit:
    """Receive buffers posted again: the peer may send C{count} more messages."""

    count: int = field(validator=_count)

    def encode(self) -> bytes:
        """The frame: a header only."""
        return FRAME_HEADER.pack(CREDIT, self.count)


def _reason(_: object, __: object, value: str) -> None:
    if len(value.encode("utf-8")) > MAX_REASON:
        raise ViaWireError(f"a CLOSE reason is at most {MAX_REASON} bytes of UTF-8")


@frozen
class Close:
    """
    The sender is closing the connection: orderly if C{reason} is empty,
    else because of the error C{reason} describes.
    """

    reason: str = field(default="", validator=_reason)

    def encode(self) -> bytes:
        """The frame: header and UTF-8 reason."""
        reason = self.reason.encode("utf-8")
        return FRAME_HEADER.pack(CLOSE, len(reason)) + reason

    @classmethod
    def because(cls, reason: str) -> Close:
        """A CLOSE carrying C{reason}, cut to L{MAX_REASON} bytes if longer."""
        data = reason.encode("utf-8")[:MAX_REASON]
        return cls(data.decode("utf-8", "ignore"))


#: Anything that follows the handshake.
Frame = Data | Credit | Close


def dataHeader(length: int) -> bytes:
    """The 5-byte header of a DATA frame carrying C{length} bytes."""
    return FRAME_HEADER.pack(DATA, length)


class FrameDecoder:
    """
    Parses a VIA byte stream incrementally: a L{Handshake} (or a L{Close}
    refusing the connection) first, then frames.

    @param maxData: the size of the receive buffers this side posted; a DATA
        frame announcing more is refused as soon as its header arrives, so
        that no more than C{maxData} bytes of one frame are ever buffered.
    @param handshake: whether a handshake is still expected.
    """

    def __init__(self, maxData: int, handshake: bool = True) -> None:
        self.maxData = maxData
        self.expectHandshake = handshake
        self._buffer = bytearray()
        self._offset = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed into a frame."""
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> None:
        """Add received bytes; parse them with L{nextFrame}."""
        if self._offset and self._offset * 2 >= len(self._buffer):
            del self._buffer[:self._offset]
            self._offset = 0
        self._buffer += data

    def nextFrame(self) -> Handshake | Frame | None:
        """
        The next complete handshake or frame, or L{None} if more bytes are needed.

        @raise ViaWireError: if the bytes are not a valid handshake or frame.
            The decoder is then unusable.
        """
        if self.expectHandshake and self.buffered and self._buffer[self._offset] != CLOSE:
            return self._handshake()
        if self.buffered < HEADER_SIZE:
            return None
        kind, value = FRAME_HEADER.unpack_from(self._buffer, self._offset)
        if kind == DATA:
            if value > self.maxData:
                raise ViaWireError(f"a DATA frame of {value} bytes exceeds the "
                                   f"{self.maxData}-byte receive buffers posted")
            payload = self._take(value)
            return None if payload is None else Data(payload)
        if kind == CREDIT:
            self._offset += HEADER_SIZE
            return Credit(value)
        if kind == CLOSE:
            if value > MAX_REASON:
                raise ViaWireError(f"a CLOSE frame with a {value}-byte reason exceeds "
                                   f"{MAX_REASON} bytes")
            reason = self._take(value)
            return None if reason is None else Close.because(reason.decode("utf-8", "replace"))
        raise ViaWireError(f"unknown frame type 0x{kind:02x}")

    def _take(self, length: int) -> bytes | None:
        start = self._offset + HEADER_SIZE
        if len(self._buffer) - start < length:
            return None
        self._offset = start + length
        with memoryview(self._buffer) as view:
            return bytes(view[start:self._offset])

    def _handshake(self) -> Handshake | None:
        have = bytes(self._buffer[self._offset:self._offset + HANDSHAKE_SIZE])
        if not MAGIC.startswith(have[:len(MAGIC)]):
            raise ViaWireError("the peer does not speak VIA: its first bytes are not "
                               "the VIA handshake magic")
        if len(have) < HANDSHAKE_SIZE:
            return None
        _, version, kind, receives, bufferSize = _HANDSHAKE.unpack(have)
        _version(None, None, version)
        handshake = Handshake(kind, receives, bufferSize, version)
        self._offset += HANDSHAKE_SIZE
        self.expectHandshake = False
        return handshake
