"""The `srp` command, run as users run it: installed, against a real node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from srp.cli import formatTable, splitTarget
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from tests.conftest import BIN, srp


def test_format_table_aligns_columns() -> None:
    table = formatTable(("A", "LONGER"), [("wide cell", "x"), ("y", "z")])
    assert table.splitlines() == ["A          LONGER", "wide cell  x", "y          z"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [("db1\\SALES", ("db1", "SALES")), ("127.0.0.2/X", ("127.0.0.2", "X")),
     ("[::1]\\X", ("::1", "X")), ("::1/X", ("::1", "X"))],
)
def test_split_target(target: str, expected: tuple[str, str]) -> None:
    assert splitTarget(target) == expected


@pytest.mark.parametrize("target", ["db1", "db1\\", "\\SALES"])
def test_split_target_refuses(target: str) -> None:
    with pytest.raises(UsageError, match="HOST\\\\INSTANCE"):
        splitTarget(target)


def test_enumerate_table(node: NodeProcess) -> None:
    result = srp("enumerate", node.address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SERVER", "INSTANCE", "VERSION", "CLUSTERED", "TCP", "NP", "VIA"]
    assert [line.split()[1] for line in lines[1:]] == ["REPORTS", "SALES"]
    assert lines[1].split()[4] == "50102"
    assert lines[1].index("50102") == lines[0].index("TCP")


def test_enumerate_json(node: NodeProcess) -> None:
    result = srp("enumerate", "--json", node.address)
    assert result.returncode == 0, result.stderr
    found = {i["instance"]: i for i in json.loads(result.stdout)}
    assert set(found) == {"REPORTS", "SALES"}
    assert found["SALES"]["tcp"] == 50101
    assert found["SALES"]["np"] == "\\\\SRPTEST\\pipe\\MSSQL$SALES\\sql\\query"
    assert found["REPORTS"]["via"] == {"netbios": "SRPTEST",
                                       "addresses": [{"nic": "0", "port": 50112}]}
    assert found["REPORTS"]["version"] == "15.0.2000.5"


def test_resolve_json_with_options_after_the_target(node: NodeProcess) -> None:
    result = srp("resolve", f"{node.address}\\sales", "--json")
    assert result.returncode == 0, result.stderr
    [instance] = json.loads(result.stdout)
    assert (instance["instance"], instance["tcp"]) == ("SALES", 50101)


def test_resolve_dac(node: NodeProcess) -> None:
    result = srp("resolve", "--dac", "--json", f"{node.address}/SALES")
    assert json.loads(result.stdout) == {"instance": "SALES", "dac_port": 50111}


@pytest.mark.parametrize("instance", ["AUDIT", "NOSUCH"])
def test_resolve_hidden_or_unknown_is_said_plainly(node: NodeProcess, instance: str) -> None:
    result = srp("resolve", "--timeout", "0.5", f"{node.address}\\{instance}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"srp: cluster {node.address} has no live registration of "
                             f"{instance}\n")


def test_resolve_from_a_plain_browser_times_out_plainly(tmp_path: Path) -> None:
    config = writeNodeConfig(tmp_path / "node.toml", [freeLoopbackAddress()],
                             [{"name": "SALES", "tcp": 1433}], node={"extensions": False})
    with NodeProcess(config, tmp_path / "node.log") as plain:
        found = srp("resolve", "--json", f"{plain.address}\\sales")
        missing = srp("resolve", "--timeout", "0.5", f"{plain.address}\\NOSUCH")
    [instance] = json.loads(found.stdout)
    assert (instance["host"], instance["tcp"], instance["node"]) == (plain.address, 1433, None)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"srp: no answer from any address of cluster "
                                     f"{plain.address} ({plain.address}) port 1434 within 0.5 s")


def test_resolve_lists_every_place_across_cluster_addresses(node: NodeProcess) -> None:
    silent = freeLoopbackAddress()
    result = srp("resolve", "--json", "--cluster-addresses", f"{silent},{node.address}",
                 "mycluster/SALES")
    assert result.returncode == 0, result.stderr
    [place] = json.loads(result.stdout)
    assert (place["host"], place["priority"], place["tcp"]) == (node.address, 0, 50101)
    assert len(place["node"]) == 16
    table = srp("resolve", "--cluster-addresses", f"{silent},{node.address}", "c/SALES")
    assert table.stdout.split()[:3] == ["HOST", "PRIORITY", "SERVER"]


def test_enumerate_and_status_across_cluster_addresses(node: NodeProcess) -> None:
    silent = freeLoopbackAddress()
    listed = srp("enumerate", "--json", "--cluster-addresses", f"{silent},{node.address}", "c")
    assert {i["instance"] for i in json.loads(listed.stdout)} == {"SALES", "REPORTS"}
    status = srp("status", "--json", "--cluster-addresses", f"{silent},{node.address}", "c")
    assert json.loads(status.stdout)["role"] == "standalone"


def test_browse_collects_answers_with_their_source(node: NodeProcess) -> None:
    result = srp("browse", "--address", node.address, "--timeout", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert {(a["source"], a["instance"]) for a in answers} == {
        (node.address, "SALES"), (node.address, "REPORTS")}


def test_browse_without_answers_fails() -> None:
    result = srp("browse", "--address", freeLoopbackAddress(), "--timeout", "0.3")
    assert result.returncode == 1
    assert "no answer to a broadcast" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [((), "a command is required"), (("resolve", "db1"), "is not HOST\\INSTANCE"),
     (("resolve", "--nope", "db1\\X"), "option --nope not recognized"),
     (("resolve", "db1\\" + "X" * 40), "at most 32"), (("serve",), "--config is required")],
)
def test_usage_errors_exit_2(arguments: tuple[str, ...], complaint: str) -> None:
    result = srp(*arguments)
    assert result.returncode == 2
    assert complaint in result.stderr.splitlines()[0]


@pytest.mark.parametrize("command", ["resolve", "enumerate", "browse", "serve", "status",
                                     "register", "unregister"])
def test_help_has_examples(command: str) -> None:
    result = srp(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: srp {command}")
    assert f"Examples:\n  srp {command}" in result.stdout


def test_version() -> None:
    assert srp("--version").stdout.startswith("srp 0.")


def test_serve_bad_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("[node]\nport = 99999\n")
    result = srp("serve", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr == f"srp: {config} [node]: port 99999 is not a port number (1-65535)\n"


def test_serve_port_in_use_is_one_line(node: NodeProcess, tmp_path: Path) -> None:
    config = writeNodeConfig(tmp_path / "node.toml", [node.address], [])
    result = srp("serve", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr == (
        f"srp: cannot listen on {node.address}:1434/udp: Address already in use "
        "(is another srp node or SQL Server Browser running there?)\n"
    )


def test_twistd_port_in_use_is_one_line(node: NodeProcess, tmp_path: Path) -> None:
    config = writeNodeConfig(tmp_path / "node.toml", [node.address], [])
    result = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "srp", "--config", str(config)],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert f"srp: cannot listen on {node.address}:1434/udp: Address already in use" in (
        result.stdout + result.stderr)


def test_twistd_bad_config_exits_non_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "srp", "--config", str(tmp_path / "no.toml")],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "no.toml: cannot read the configuration: No such file or directory" in (
        result.stdout + result.stderr)


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = writeNodeConfig(tmp_path / "node.toml", [freeLoopbackAddress()],
                             [{"name": "A", "tcp": 1}])
    process = NodeProcess(config, tmp_path / "node.log", str(BIN / "srp")).start()
    assert process.stop() == 0
    assert "Traceback" not in process.log()


def test_status_of_a_node_with_many_instances(tmp_path: Path) -> None:
    instances: list[dict[str, object]] = [
        {"name": f"INSTANCE{n:03d}", "tcp": 20000 + n,
         "np": f"\\\\SRPTEST\\pipe\\MSSQL$INSTANCE{n:03d}\\sql\\query"} for n in range(150)]
    config = writeNodeConfig(tmp_path / "node.toml", [freeLoopbackAddress()], instances)
    with NodeProcess(config, tmp_path / "node.log") as node:
        result = srp("status", "--json", node.address)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["role"], status["cluster"]) == ("standalone", "srp")
    assert len(status["registrations"]) == 150


def test_status_table_and_wrong_cluster(node: NodeProcess) -> None:
    result = srp("status", node.address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["NODE", "CLUSTER", "ROLE", "EPOCH",
                                                     "ACTIVE"]
    assert "Registrations:" in result.stdout and "SALES" in result.stdout
    wrong = srp("status", "--cluster", "other", "--timeout", "0.5", node.address)
    assert wrong.returncode == 1
    assert "the cluster name or key differ" in wrong.stderr


def test_serve_survives_sigpipe(tmp_path: Path) -> None:
    """A node must not die when a peer closes a socket it writes to (EPIPE)."""
    import os
    import signal
    import time

    config = writeNodeConfig(tmp_path / "node.toml", [freeLoopbackAddress()],
                             [{"name": "A", "tcp": 1}])
    process = NodeProcess(config, tmp_path / "node.log", str(BIN / "srp")).start()
    os.kill(process.pid, signal.SIGPIPE)
    time.sleep(0.2)
    assert process.process is not None and process.process.poll() is None
    assert process.stop() == 0


def test_a_node_on_ipv6_and_ipv4_at_once(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    address = freeLoopbackAddress(port)
    config = writeNodeConfig(tmp_path / "node.toml", ["::1", address],
                             [{"name": "SALES", "tcp": 1433}], port=port)
    with NodeProcess(config, tmp_path / "node.log"):
        for target in ("[::1]\\SALES", "::1/SALES", f"{address}\\SALES"):
            result = srp("resolve", "--json", "--port", str(port), target)
            assert result.returncode == 0, (target, result.stderr)
            assert json.loads(result.stdout)[0]["tcp"] == 1433
        listed = srp("enumerate", "--json", "--port", str(port), "::1")
        assert [i["instance"] for i in json.loads(listed.stdout)] == ["SALES"]
