"""
Fuzz targets: every decoder, and the responder's and node's C{datagramReceived}.

    python -m fuzz.targets TARGET [libFuzzer options, e.g. -runs=100000]
    python -m fuzz.targets --list

Each target feeds the fuzzer's bytes to one entry point and lets through
only the error that entry point documents; anything else escaping is a
crash, which atheris reports with the input that caused it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import struct
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["srp"]):
    from twisted.internet.task import Clock

    from srp.authenticator import ClusterAuthenticator
    from srp.records import InstanceInfo, Registration
    from srp.server.config import ClusterConfig, NodeConfig
    from srp.server.node import NodeService
    from srp.server.registry import Registry
    from srp.server.responder import ResolutionResponder
    from srp.server.roles.active import ActiveRole
    from srp.testing import FakeNetwork, connectDatagram
    from srp.wire import WireError, decodeRequest, decodeResponse
    from srp.wire.cluster import HEADER_SIZE, clusterId, decodeEnvelope
    from srp.wire.tds import PRELOGIN, decodePrelogin

KEY = b"fuzzing-key-0123456789"


def mcsqlrRequest(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decodeRequest(data)


def mcsqlrResponse(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decodeResponse(data)


def clusterEnvelope(data: bytes) -> None:
    for key in (b"", KEY):
        with contextlib.suppress(WireError):
            decodeEnvelope(data, key, clusterId("fuzz"))


def tdsPrelogin(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decodePrelogin(data, PRELOGIN)


_responder = ResolutionResponder(
    Registry([Registration(InstanceInfo("H", "SALES", tcp=1433), dacPort=1434)]), Clock())
connectDatagram(_responder)


def responderDatagram(data: bytes) -> None:
    _responder.datagramReceived(data, ("127.0.0.1", 5000))
    _responder.transport.written.clear()  # type: ignore[union-attr]


_network = FakeNetwork()
_node = NodeService(NodeConfig(
    listen=("127.0.0.1",), instances=(Registration(InstanceInfo("H", "SALES", tcp=1433)),),
    cluster=ClusterConfig(name="fuzz")), _network.reactor("127.0.0.1"))
_node.startService()
_network.clock.advance(1.0)


def nodeDatagram(data: bytes) -> None:
    # Authentic messages move the node between roles (a higher epoch makes
    # it step down): deliver on whichever socket it has now.
    membership = _node.membership
    role = membership.current
    replyFrom = role.ports.sender if isinstance(role, ActiveRole) else membership.socket
    assert replyFrom is not None
    membership.received(data, ("127.0.0.2", 5000), replyFrom)
    _network.clock.advance(0.01)


_signer = ClusterAuthenticator(_network.reactor("127.0.0.2"), clusterId("fuzz"), 7)
_sequence = [0]


def signedClusterMessage(data: bytes) -> None:
    """A fuzzed header and payload that carry a valid tag, fresh sequence and right cluster."""
    if len(data) < HEADER_SIZE:
        return
    _sequence[0] = max(_sequence[0] + 1, int(_network.clock.seconds() * 1_000_000))
    header = bytearray(data[:HEADER_SIZE])
    header[0] = 0xA0 + header[0] % 13
    header[1] = 1
    struct.pack_into("<I", header, 4, clusterId("fuzz"))
    struct.pack_into("<Q", header, 20, _sequence[0])
    struct.pack_into("<H", header, 28, len(data) - HEADER_SIZE)
    body = bytes(header) + data[HEADER_SIZE:]
    datagram = body + hmac.digest(b"", body, hashlib.sha256)
    with contextlib.suppress(WireError):
        decodeEnvelope(datagram, b"", clusterId("fuzz"))
    nodeDatagram(datagram)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "mcsqlr-request": mcsqlrRequest,
    "mcsqlr-response": mcsqlrResponse,
    "cluster-envelope": clusterEnvelope,
    "tds-prelogin": tdsPrelogin,
    "responder-datagram": responderDatagram,
    "node-datagram": nodeDatagram,
    "signed-cluster-message": signedClusterMessage,
}


def main(argv: list[str]) -> None:
    """Run the target named in C{argv[1]} under atheris."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        print("targets: " + ", ".join(TARGETS))
        raise SystemExit(0 if argv[1:2] == ["--list"] else 2)
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
