"""
The fault matrix, reduced to one trial per cell and srp proxy's cells to
two topologies (C{make bench} runs ten of every cell and prints the table,
L{bench.matrix}): real echo servers and srp nodes, an
application on the public API, each fault in each topology; the history
checker fails a cell that lost a request or was answered from a place
already replaced.
"""

from __future__ import annotations

from bench.matrix import cells, runMatrix

#: Faults the client sees at once (the connection closes): the standby it
#: knows is tried at once, so the application's gap is far below the ~1 s
#: the cluster takes to notice.  (The speed targets are in the benchmark.)
SEEN_AT_ONCE = ("kill -9 server", "server stops")


def test_every_cell_loses_nothing_and_never_answers_from_a_replaced_place() -> None:
    # srp proxy's cells in two topologies: the paths differ after the proxy,
    # not in how the cluster is laid out (make bench runs them everywhere).
    rows = runMatrix(1, timeout=900, proxyIn=["primary-active", "three-hosts"])
    assert len(cells(rows)) == len(rows) >= 24
    broken = [r for r in rows if not r.get("ok")]
    assert broken == [], broken
    for row in rows:
        # Through srp proxy the application reconnects to the same place (the
        # proxy): no fail-over of its own.
        moves = 1 if row["moved"] and row["path"] == "srp:" else 0
        assert row["failovers"] == moves, row
        if row["moved"]:
            assert row["places"][-1] == "B", row
        else:
            assert row["places"] in (["A"], []), row
        if row["fault"] in SEEN_AT_ONCE:
            assert row["longest_gap_s"] < 0.5, row
