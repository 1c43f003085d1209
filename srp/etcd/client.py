"""
An etcd v3 client over etcd's JSON gateway (C{/v3/...}), with C{treq}.

Keys and values are bytes here and base64 on the wire; etcd's 64-bit
integers arrive as JSON strings.  Each request goes to the endpoint that
last answered and, when that one cannot be reached, to the next: a member
that died costs one failed connection, not an error.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

import treq
from attrs import frozen
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.error import ConnectError, ConnectionLost, TimeoutError
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    _HTTP11ClientFactory,
)
from twisted.web.http_headers import Headers

from srp.etcd.access import TLSPolicy, TLSSettings

#: Seconds a request may take before its endpoint counts as unreachable.
DEFAULT_TIMEOUT = 1.0
#: How many keys one page of L{EtcdClient.rangeAll} holds.
PAGE = 1000
#: The gRPC status etcd answers with when a member cannot serve (no leader).
UNAVAILABLE = 14
#: The gRPC status of a request whose auth token etcd does not take.
UNAUTHENTICATED = 16


class EtcdError(Exception):
    """etcd answered with an error; C{code} is its gRPC status code."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class Unreachable(EtcdError):
    """No endpoint answered: etcd is down, or this node is cut off from it."""


def encode(data: bytes) -> str:
    """C{data} as the gateway carries bytes: base64."""
    return base64.b64encode(data).decode("ascii")


def decode(text: str | None) -> bytes:
    """The bytes that the gateway's base64 C{text} carries (none: empty)."""
    return base64.b64decode(text or "")


def prefixEnd(prefix: bytes) -> bytes:
    """The C{range_end} that makes a request cover every key starting with C{prefix}."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _keys(key: bytes, prefix: bool) -> dict[str, str]:
    """The keys a range or delete covers: C{key}, or every key under it."""
    body = {"key": encode(key)}
    if prefix:
        body["range_end"] = encode(prefixEnd(key))
    return body


@frozen
class KeyValue:
    """One key as etcd holds it (a deleted key in a watch event has no value)."""

    key: bytes
    value: bytes = b""
    createRevision: int = 0
    modRevision: int = 0
    lease: int = 0

    @classmethod
    def fromJSON(cls, kv: Mapping[str, Any]) -> KeyValue:
        """Read a C{mvccpb.KeyValue} as the gateway writes it."""
        return cls(decode(kv.get("key")), decode(kv.get("value")),
                   int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)),
                   int(kv.get("lease", 0)))


@frozen
class Event:
    """A watch event: C{kv} was put (C{deleted} false) or deleted."""

    kv: KeyValue
    deleted: bool = False


@frozen
class Compare:
    """
    A txn condition: the C{target} ("CREATE", "MOD" or "VERSION") revision of
    C{key} stands in C{result} ("EQUAL", "GREATER", "LESS", "NOT_EQUAL") to C{revision}.
    """

    key: bytes
    revision: int
    target: str = "CREATE"
    result: str = "EQUAL"

    def toJSON(self) -> dict[str, Any]:
        """The compare as the gateway takes it."""
        field = {"CREATE": "create_revision", "MOD": "mod_revision",
                 "VERSION": "version"}[self.target]
        return {"key": encode(self.key), "target": self.target, "result": self.result,
                field: self.revision}


def putOp(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    """A txn operation that puts C{value} at C{key}, attached to C{lease} (0: none)."""
    return {"request_put": {"key": encode(key), "value": encode(value), "lease": lease}}


def rangeOp(key: bytes) -> dict[str, Any]:
    """A txn operation that reads C{key}."""
    return {"request_range": {"key": encode(key)}}


def deleteOp(key: bytes) -> dict[str, Any]:
    """A txn operation that deletes C{key}."""
    return {"request_delete_range": {"key": encode(key)}}


@frozen
class TxnResult:
    """What a txn did: whether its compares held, the revision, and each op's response."""

    succeeded: bool
    revision: int
    responses: tuple[Mapping[str, Any], ...]

    def ranged(self, n: int = 0) -> list[KeyValue]:
        """The keys read by the C{n}th operation, a range."""
        answer = self.responses[n].get("response_range", {})
        return [KeyValue.fromJSON(kv) for kv in answer.get("kvs", ())]


def revisionOf(answer: Mapping[str, Any]) -> int:
    """The store revision in the header of an etcd answer."""
    return int(answer.get("header", {}).get("revision", 0))


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


def _parsed(body: bytes, code: int) -> dict[str, Any]:
    """etcd's JSON answer; an error with etcd's words when it answered something else."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        text = body.decode("utf-8", "replace").strip()[:200]
        return {"error": f"HTTP {code}: {text}" if text else f"HTTP {code}"}
    return answer


def _whyFailed(error: Exception) -> str:
    """A short reason for a failed request: OpenSSL's own words for a TLS failure."""
    for reason in getattr(error, "reasons", None) or ():
        if isinstance(reason, Failure) and isinstance(reason.value, SSL.Error):
            errors = reason.value.args[0] if reason.value.args else ()
            words = [e[-1] for e in errors if isinstance(e, tuple) and e and e[-1]]
            return "TLS failed: " + (words[-1] if words else str(reason.value))
    return error.__class__.__name__


class EtcdClient:
    """
    A Twisted-native etcd v3 client: range, put, delete, txn, leases and
    (through L{srp.etcd.watch}) watches, over the JSON gateway of any of
    C{endpoints} (C{https://} ones with C{tls}), as C{user} if etcd's
    authentication is on.
    """

    def __init__(self, reactor: Any, endpoints: Sequence[str],
                 timeout: float = DEFAULT_TIMEOUT, user: str | None = None,
                 password: str = "", tls: TLSSettings | None = None) -> None:
        if not endpoints:
            raise ValueError("an etcd client needs at least one endpoint")
        self.reactor = reactor
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor)
        self.pool.retryAutomatically = False
        # Not a line in the log for every connection to etcd.
        self.pool._factory = _QuietFactory
        policy = TLSPolicy(tls if tls is not None else TLSSettings())
        self.http = HTTPClient(Agent(reactor, contextFactory=policy, pool=self.pool))
        #: The endpoint that answered last: requests go there first.
        self.current = 0
        #: The user and password of etcd's authentication (no user: none),
        #: and the token they got.
        self.user = user
        self.password = password
        self.token: str | None = None

    def skipCurrent(self) -> None:
        """Send the next requests to the next endpoint first: the current one failed them."""
        self.current = (self.current + 1) % len(self.endpoints)

    def close(self) -> Deferred[None]:
        """Close every pooled connection."""
        closed: Deferred[None] = self.pool.closeCachedConnections()
        return closed

    @inlineCallbacks
    def post(self, path: str, body: Mapping[str, Any], stream: bool = False,
             headers: Mapping[str, str] | None = None, only: int | None = None) -> Any:
        """
        POST C{body} to C{path} at the current endpoint, then at each other in
        turn (or at endpoint number C{only} alone): the parsed JSON answer, or
        (with C{stream}) the response itself once its headers came.  With a
        C{user}, the request carries a token, asked for first and again when
        etcd no longer takes it.

        @raise Unreachable: if no endpoint could be reached.
        @raise EtcdError: if etcd answered with an error.
        """
        if self.user is not None and self.token is None:
            yield self.authenticate()
        try:
            return (yield self._post(path, body, stream, headers, only))
        except EtcdError as e:
            if self.user is None or e.code != UNAUTHENTICATED:
                raise
        # The token expired, or the member now asked did not issue it.
        yield self.authenticate()
        return (yield self._post(path, body, stream, headers, only))

    @inlineCallbacks
    def authenticate(self) -> Any:
        """Ask etcd for a token for C{user}: the requests that follow carry it."""
        self.token = None
        answer = yield self._post("/v3/auth/authenticate",
                                  {"name": self.user, "password": self.password}, False, None,
                                  None)
        self.token = str(answer["token"])
        return None

    @inlineCallbacks
    def _post(self, path: str, body: Mapping[str, Any], stream: bool,
              headers: Mapping[str, str] | None, only: int | None) -> Any:
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = self.token
        reasons = []
        order = [only] if only is not None else [
            (self.current + attempt) % len(self.endpoints)
            for attempt in range(len(self.endpoints))]
        for n in order:
            try:
                response = yield self.http.post(
                    self.endpoints[n] + path, json=dict(body), timeout=self.timeout,
                    unbuffered=stream,
                    headers=Headers({k: [v] for k, v in headers.items()}))
                if stream and response.code == 200:
                    self.current = n
                    return response
                answer = _parsed((yield treq.content(response)), response.code)
            except (ConnectError, ConnectionLost, TimeoutError, ResponseFailed,
                    RequestTransmissionFailed,
                    ValueError) as e:
                reasons.append(f"{self.endpoints[n]}: {_whyFailed(e)}")
                continue
            except CancelledError:  # treq's timeout
                reasons.append(f"{self.endpoints[n]}: no answer in {self.timeout} s")
                continue
            if "error" in answer or response.code != 200:
                message = str(answer.get("message") or answer.get("error"))
                if response.code == 503 or answer.get("code") == UNAVAILABLE:
                    # This member has no leader (it is cut off): another may.
                    reasons.append(f"{self.endpoints[n]}: {message}")
                    continue
                self.current = n
                raise EtcdError(message, int(answer.get("code", 0)))
            self.current = n
            return answer
        raise Unreachable("no etcd endpoint answered (" + "; ".join(reasons) + ")")

    @inlineCallbacks
    def range(self, key: bytes, prefix: bool = False) -> Any:
        """C{(revision, [KeyValue])}: C{key}, or every key under it with C{prefix}."""
        answer = yield self.post("/v3/kv/range", _keys(key, prefix))
        return revisionOf(answer), [KeyValue.fromJSON(kv) for kv in answer.get("kvs", ())]

    @inlineCallbacks
    def rangeAll(self, prefix: bytes, page: int = PAGE) -> Any:
        """
        C{(revision, [KeyValue])}: every key under C{prefix}, as of one
        revision, read C{page} keys at a time (so no answer grows with the
        cluster beyond what etcd and the gateway take).
        """
        body = _keys(prefix, True) | {"limit": page}
        kvs: list[KeyValue] = []
        revision = 0
        while True:
            answer = yield self.post("/v3/kv/range", body | ({"revision": revision}
                                                            if revision else {}))
            revision = revision or revisionOf(answer)
            kvs += [KeyValue.fromJSON(kv) for kv in answer.get("kvs", ())]
            if not answer.get("more") or not answer.get("kvs"):
                return revision, kvs
            body["key"] = encode(kvs[-1].key + b"\0")

    @inlineCallbacks
    def put(self, key: bytes, value: bytes, lease: int = 0) -> Any:
        """Put C{value} at C{key}, attached to C{lease} (0: none); the new revision."""
        answer = yield self.post("/v3/kv/put", {"key": encode(key), "value": encode(value),
                                                "lease": lease})
        return revisionOf(answer)

    @inlineCallbacks
    def delete(self, key: bytes, prefix: bool = False) -> Any:
        """Delete C{key} (or every key under it); how many keys went."""
        answer = yield self.post("/v3/kv/deleterange", _keys(key, prefix))
        return int(answer.get("deleted", 0))

    @inlineCallbacks
    def txn(self, compare: Sequence[Compare], success: Sequence[Mapping[str, Any]],
            failure: Sequence[Mapping[str, Any]] = ()) -> Any:
        """Run C{success} if every C{compare} holds, else C{failure}: a L{TxnResult}."""
        answer = yield self.post("/v3/kv/txn", {
            "compare": [c.toJSON() for c in compare], "success": list(success),
            "failure": list(failure)})
        return TxnResult(bool(answer.get("succeeded", False)), revisionOf(answer),
                         tuple(answer.get("responses", ())))

    @inlineCallbacks
    def grant(self, ttl: int) -> Any:
        """A new lease of C{ttl} seconds: C{(id, granted ttl)}."""
        answer = yield self.post("/v3/lease/grant", {"TTL": ttl})
        return int(answer["ID"]), int(answer.get("TTL", ttl))

    @inlineCallbacks
    def keepAlive(self, lease: int) -> Any:
        """Renew C{lease}: its TTL in seconds, 0 when it has expired (or was revoked)."""
        answer = yield self.post("/v3/lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", 0))

    @inlineCallbacks
    def revoke(self, lease: int) -> Any:
        """Revoke C{lease}: every key attached to it is deleted."""
        try:
            yield self.post("/v3/lease/revoke", {"ID": lease})
        except EtcdError as e:
            if isinstance(e, Unreachable) or "not found" not in str(e):
                raise
        return None
