"""
Pure codecs for the messages srp sends and receives; no I/O, no Twisted.

L{srp.wire.mcsqlr} holds the [MC-SQLR] client messages and
L{srp.wire.instances} the RESP_DATA instance descriptions they carry.  Every
decoder raises only L{WireError}.
"""

from srp.wire.errors import WireError
from srp.wire.instances import InstanceInfo, ViaAddress, ViaInfo
from srp.wire.mcsqlr import (
    BroadcastRequest,
    DACRequest,
    DACResponse,
    EnumerateRequest,
    InstanceRequest,
    InstancesResponse,
    Request,
    Response,
    decodeRequest,
    decodeResponse,
)

__all__ = [
    "BroadcastRequest",
    "DACRequest",
    "DACResponse",
    "EnumerateRequest",
    "InstanceInfo",
    "InstanceRequest",
    "InstancesResponse",
    "Request",
    "Response",
    "ViaAddress",
    "ViaInfo",
    "WireError",
    "decodeRequest",
    "decodeResponse",
]
