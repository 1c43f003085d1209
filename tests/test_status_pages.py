"""
`srp status` in pages: each page fits in one datagram, the pages add up to
the whole status, and the command puts them together (or says which page
did not come), on a fake network.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python.failure import Failure

from srp.cli import run
from srp.records import InstanceInfo, Registration
from srp.server.node import NodeService
from srp.server.status import statusPage
from srp.wire.cluster import MAX_PAYLOAD, Envelope, Member, StatusQuery, StatusReply
from tests.cluster_sim import KEY
from tests.large import CLUSTER, HOST, Cluster, instances

SUMMARY = {"node": "0000000000000001", "cluster": "c", "role": "active", "epoch": 1,
           "active": None, "passives": [], "registrations": [], "counters": {"joins": 3}}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 300), st.integers(0, 3000), st.sampled_from([1200, 6000, MAX_PAYLOAD]))
def test_pages_fit_and_add_up_to_the_whole_status(passiveCount: int, registrationCount: int,
                                                  budget: int) -> None:
    passives = [Member(n + 1, f"10.0.{n // 250}.{n % 250 + 1}", 40000 + n)
                for n in range(passiveCount)]
    registrations = [Registration(InstanceInfo("SRV", f"INSTANCE{n}", tcp=1 + n),
                                  priority=n % 3, nodeId=n % 7)
                     for n in range(registrationCount)]
    got: dict[str, list[Any]] = {"passives": [], "registrations": []}
    while True:
        query = StatusQuery(len(got["passives"]), len(got["registrations"]))
        page = statusPage(SUMMARY, passives, registrations, query, budget)
        assert len(page.encode("utf-8")) <= budget
        document = json.loads(page)
        assert (document["passives_total"], document["registrations_total"]) == (
            passiveCount, registrationCount)
        assert list(document)[:8] == list(SUMMARY)
        assert document["passives"] or document["registrations"] or (
            query.passives, query.registrations) == (passiveCount, registrationCount)
        if document["registrations"]:
            assert len(got["passives"]) + len(document["passives"]) == passiveCount
        for name in got:
            got[name] += document[name]
        if (len(got["passives"]), len(got["registrations"])) == (passiveCount,
                                                                 registrationCount):
            break
    assert [p["node"] for p in got["passives"]] == [f"{n + 1:016x}" for n in range(passiveCount)]
    assert [r["instance"] for r in got["registrations"]] == [r.name for r in registrations]


def status(cluster: Cluster, *argv: str) -> tuple[int, str, str]:
    """Run C{srp status} on the fake network: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    outcome: list[object] = []
    run(cluster.network.reactor("127.0.0.50"),
        ["status", "--cluster", CLUSTER, "--timeout", "0.5", *argv, HOST],
        out, err).addBoth(outcome.append)
    cluster.run(60, lambda: bool(outcome))
    [result] = outcome
    if isinstance(result, Failure):
        assert isinstance(result.value, SystemExit)
        return int(result.value.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> tuple[Cluster, NodeService]:
    """An active holding 6,001 registrations: its own and 3 passives' of 2,000 each."""
    monkeypatch.setenv("SRP_CLUSTER_KEY", KEY.decode())
    cluster = Cluster()
    active = cluster.active()
    for nodeId in (2, 3, 4):
        cluster.node(instances(2000, f"N{nodeId}_"), nodeId)
    cluster.run(5.0, lambda: len(active.registry.registrations()) == 6001)
    cluster.sent.clear()
    return cluster, active


def test_status_json_is_the_whole_status_in_its_usual_shape(
        nodes: tuple[Cluster, NodeService]) -> None:
    cluster, active = nodes
    code, out, err = status(cluster, "--json")
    assert code == 0, err
    got = json.loads(out)
    expected = json.loads(json.dumps(active.membership.status()))
    assert list(got) == list(expected)
    assert {k: v for k, v in got.items() if k != "counters"} == {
        k: v for k, v in expected.items() if k != "counters"}
    assert len(got["registrations"]) == 6001 and len(got["passives"]) == 3
    queries = [e.message for e in cluster.sent if isinstance(e.message, StatusQuery)]
    replies = [e.message for e in cluster.sent if isinstance(e.message, StatusReply)]
    assert len(queries) == len(replies) == 12  # about 550 registrations a page
    assert queries[0] == StatusQuery() and queries[0].version == 1


def test_status_table_lists_every_registration(nodes: tuple[Cluster, NodeService]) -> None:
    code, out, err = status(nodes[0])
    assert code == 0, err
    assert out.splitlines()[0].split() == ["NODE", "CLUSTER", "ROLE", "EPOCH", "ACTIVE"]
    rows = out.split("\nRegistrations:\n")[1].split("\n\nCounters:")[0].splitlines()
    assert rows[0].split() == ["INSTANCE", "NODE", "PRIORITY", "TCP", "HIDDEN", "HEALTH"]
    assert len(rows) == 1 + 6001


def test_a_missing_page_is_an_error_naming_it(nodes: tuple[Cluster, NodeService]) -> None:
    cluster = nodes[0]
    offsets: list[int] = []

    def dropTheThirdPage(envelope: Envelope) -> bool:
        message = envelope.message
        if not isinstance(message, StatusQuery):
            return False
        if message.registrations not in offsets:
            offsets.append(message.registrations)
        return offsets.index(message.registrations) == 2

    cluster.drop = dropTheThirdPage
    code, out, err = status(cluster)
    assert code == 1 and out == ""
    assert len(offsets) == 3
    assert (f"answered the first {offsets[2]} registrations of its status, but not the page "
            f"from {offsets[2]}; try again or raise --timeout") in err
    assert "no srp node listens there" not in err
