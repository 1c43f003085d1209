"""
`srp serve --log-format json --log-level ...`, and `--json` errors on stdout:
the observers themselves, then real nodes under a takeover.
"""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import pytest
from twisted.logger import Logger, LogPublisher

from srp.logs import nodeObserver
from srp.testing.processes import (
    NodeProcess,
    freeLoopbackAddress,
    writeClusterConfigs,
    writeNodeConfig,
)
from tests.conftest import BIN, srp
from tests.test_cluster_processes import waitFor


def logged(format: str, level: str) -> str:
    out = io.StringIO()
    log = Logger(namespace="srp.test", observer=LogPublisher(nodeObserver(out, format, level)))
    log.debug("debug {n}", n=1)
    log.info("info {n}", n=2)
    log.warn("warn {n}", n=3, message="a field named like a key")
    log.error("error {n}", n=4)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("failed {n}", n=5)
    return out.getvalue()


def test_json_lines_carry_time_level_namespace_message_and_fields() -> None:
    lines = logged("json", "debug").splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["level"], e["namespace"], e["message"]) for e in events] == [
        ("debug", "srp.test", "debug 1"), ("info", "srp.test", "info 2"),
        ("warn", "srp.test", "warn 3"), ("error", "srp.test", "error 4"),
        ("critical", "srp.test", "failed 5")]
    assert events[2]["fields"] == {"n": 3, "message": "a field named like a key"}
    assert events[0]["time"].endswith("+00:00") and "T" in events[0]["time"]
    assert "ZeroDivisionError" in events[4]["traceback"]
    assert "\x1e" not in "".join(lines)


@pytest.mark.parametrize(("level", "first"), [("debug", "debug 1"), ("info", "info 2"),
                                              ("warn", "warn 3"), ("error", "error 4"),
                                              ("critical", "failed 5")])
def test_the_level_filter_keeps_that_level_and_above(level: str, first: str) -> None:
    text = logged("text", level)
    messages = ["debug 1", "info 2", "warn 3", "error 4", "failed 5"]
    kept = messages[messages.index(first):]
    assert [m for m in messages if m in text] == kept


def test_unknown_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        nodeObserver(io.StringIO(), "xml")
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        nodeObserver(io.StringIO(), "json", "loud")


def test_serve_refuses_an_unknown_level(tmp_path: Path) -> None:
    config = writeNodeConfig(tmp_path / "n.toml", ["127.0.0.1"], [])
    result = srp("serve", "--config", str(config), "--log-level", "verbose")
    assert result.returncode == 2
    assert "--log-level must be one of debug, info, warn, error, critical, not 'verbose'" \
        in result.stderr


def test_json_mode_errors_are_json_on_stdout_too() -> None:
    silent = freeLoopbackAddress()
    result = srp("resolve", "--json", "--timeout", "0.3", f"{silent}\\SALES")
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    error = json.loads(line)["error"]
    assert error.startswith("no answer from ") and silent in error
    assert f"srp: {error}\n" == result.stderr
    usage = srp("status", "--json", "--port", "x", silent)
    assert usage.returncode == 2
    assert "invalid literal" in json.loads(usage.stdout)["error"]
    plain = srp("resolve", "--timeout", "0.3", f"{silent}\\SALES")
    assert plain.returncode == 1 and plain.stdout == ""


def test_every_json_line_of_a_takeover_parses(tmp_path: Path) -> None:
    """Two real nodes on one address, the active killed (-9): both logs, line by line."""
    address = freeLoopbackAddress()
    nodes = []
    try:
        for index, config in enumerate(writeClusterConfigs(tmp_path, address,
                                                           {"name": "logs"})):
            logfile = tmp_path / f"node{index}.jsonl"
            nodes.append(NodeProcess(config, logfile, output=tmp_path / f"node{index}.out", argv=[
                str(BIN / "srp"), "serve", "--config", str(config), "--log-format", "json",
                "--log-level", "debug", "--logfile", str(logfile)]).start())
        waitFor(lambda: "Passive in cluster" in nodes[1].log())
        os.kill(nodes[0].pid, signal.SIGKILL)
        waitFor(lambda: "Active for cluster logs at epoch 2" in nodes[1].log())
    finally:
        for node in nodes:
            node.stop()
    for index, node in enumerate(nodes):
        assert (tmp_path / f"node{index}.out").read_text() == ""
        events = [json.loads(line) for line in node.log().splitlines()]
        assert events and all(e["level"] in ("debug", "info", "warn", "error", "critical")
                              and e["namespace"] for e in events)
    survivor = [json.loads(line) for line in nodes[1].log().splitlines()]
    [active] = [e for e in survivor if e["message"].startswith("Active for cluster logs")]
    assert (active["level"], active["namespace"]) == ("info", "srp.server.roles.active.ActiveRole")
    assert active["fields"] == {"cluster": "logs", "epoch": 2, "count": 0}
    assert any(e["level"] == "warn" for e in survivor), "the keyless cluster's warning"
