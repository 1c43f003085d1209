"""
Bad input at the command line is one line: every srp command, fed random
option values and random arguments, prints one line on stderr and exits
with 1 or 2, never a traceback.  The commands run in-process on a fake UDP
network where nothing answers (L{srp.testing.FakeNetwork}); a few real
subprocesses check the console script itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import fail
from twisted.internet.error import DNSLookupError
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from srp.cli import run
from srp.client.browser import _Query as _BrowserQuery
from srp.client.browser import canonicalAddress
from srp.client.resolver import ClusterResolver, Resolution, _Query
from srp.clusterkey import BadKey, loadKey
from srp.server.config import ConfigError, loadConfig, parseConfig
from srp.testing import FakeNetwork
from srp.wire import InstanceInfo, InstanceRequest, InstancesResponse, WireError
from srp.wire.cluster import Resolve
from tests.conftest import BIN


class _NoNames:
    """A name resolver that knows no names."""

    def resolveHostName(self, receiver: Any, hostName: str, portNumber: int = 0) -> Any:
        receiver.resolutionBegan(None)
        receiver.resolutionComplete()
        return receiver


def runInProcess(argv: list[str]) -> tuple[int, str, str]:
    """Run C{srp ARGV} on a fake network; its exit status, stdout and stderr."""
    network = FakeNetwork()
    reactor: Any = network.reactor("127.0.0.1")
    reactor.nameResolver = _NoNames()
    reactor.resolve = lambda name, timeout=None: fail(DNSLookupError(name))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            done = run(reactor, argv, out, err)
        except SystemExit as e:
            return int(e.code or 0), out.getvalue(), err.getvalue()
        outcome: list[Any] = []
        done.addBoth(outcome.append)
        while not outcome:
            network.clock.advance(1.0)
            assert network.clock.seconds() < 10_000, f"srp {argv} never ended"
    [result] = outcome
    if isinstance(result, Failure):
        result.trap(SystemExit)
        assert isinstance(result.value, SystemExit)
        return int(result.value.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def assertOneLine(argv: list[str]) -> None:
    status, out, err = runInProcess(argv)
    if status == 0:
        # Only --help and --version (or an abbreviation of them) end well here.
        assert err == "" and out, (argv, out)
        return
    assert status in (1, 2), (argv, status, err)
    assert err.startswith("srp: ") and err.endswith("\n") and err.count("\n") == 1, (argv, err)
    assert "Traceback" not in err


numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e999", "0", "-1", "0x10", "", " "]))
anything = st.text(max_size=40)
values = st.one_of(numbers, anything,
                   st.sampled_from(["127.0.0.1", "::1", "999.1.1.1", "::ffff:127.0.0.2",
                                    "a,b", "127.0.0.1,,::1", "db1", "-", "--"]))
targets = st.one_of(
    anything,
    st.builds(lambda host, instance: f"{host}\\{instance}",
              st.one_of(anything, st.sampled_from(["127.0.0.1", "[::1]", "db1", "999.1.1.1"])),
              st.one_of(anything, st.sampled_from(["SALES", "A\0B", "A\nB", "   ", "X" * 40]))))
OPTIONS = {
    "resolve": ["-p", "-t", "-a", "-c", "-k", "--port", "--timeout", "--cluster-addresses",
                "--cluster", "--key-file", "--dac", "--json"],
    "enumerate": ["-p", "-t", "-a", "-c", "-k", "--json"],
    "status": ["-p", "-t", "-a", "-c", "-k", "--json"],
    "browse": ["-p", "-t", "-a", "--address", "--json"],
}


@st.composite
def commandLines(draw: st.DrawFn) -> list[str]:
    """A query command with random options (values included) and arguments."""
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    for option in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4)):
        argv.append(option)
        if option not in ("--dac", "--json"):
            argv.append(draw(values))
    argv += draw(st.lists(targets, max_size=2))
    return draw(st.permutations(argv[1:]).map(lambda rest: [command, *rest])) if draw(
        st.booleans()) else argv


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commandLines())
def test_random_options_are_one_line(argv: list[str]) -> None:
    assertOneLine(argv)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(anything, st.sampled_from([*sorted(OPTIONS), "serve"])),
                max_size=5))
def test_random_argv_is_one_line(argv: list[str]) -> None:
    assume(argv[:1] != ["serve"] or "--config" not in argv)
    assertOneLine(argv)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_serve_with_a_random_config_file_is_one_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "node.toml"
        config.write_bytes(content)
        try:
            loadConfig(config)
        except ConfigError:
            pass
        else:
            assume(False)  # a valid configuration would start a node
        assertOneLine(["serve", "--config", str(config)])


@pytest.mark.parametrize(("argv", "message"), [
    (["resolve", "-p", "99999", "H\\X"], "srp: --port 99999 is not a port number (1-65535)"),
    (["resolve", "-t", "-1", "H\\X"], "srp: --timeout -1.0 is not a number of seconds above 0"),
    (["resolve", "-t", "nan", "H\\X"], "srp: --timeout nan is not a number of seconds above 0"),
    (["status", "-t", "-1", "127.0.0.1"], "srp: --timeout -1.0 is not a number of seconds"),
    (["browse", "--address", "999.1.1.1"], "srp: --address: '999.1.1.1' is not an IP address"),
    (["resolve", "H\\A\nB"], "srp: instance name 'A\\nB' contains a control character"),
    (["status", "-c", "", "127.0.0.1"], "srp: --cluster '' is not a cluster name"),
])
def test_each_known_traceback_is_one_line(argv: list[str], message: str) -> None:
    """The console script itself, as a user runs it."""
    result = subprocess.run([str(BIN / "srp"), *argv], capture_output=True, text=True,
                            timeout=30, cwd="/", stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("command", [["srp", "serve"], ["twistd", "-n", "--pidfile=", "srp"]])
def test_a_config_file_that_is_not_utf8(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_bytes(b"[node]\nlisten = ['127.0.0.1']\n# caf\xe9\n")
    result = subprocess.run([str(BIN / command[0]), *command[1:], "--config", str(config)],
                            capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{config}: not valid TOML: not UTF-8 text (byte 35)" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["A\0B", "A\nB", " ", "   ", "\t"])
def test_instance_names_that_cannot_be_asked_for(name: str) -> None:
    """Refused by every encode path: the config, the plain request, the extended resolve."""
    for build in (lambda: InstanceInfo("H", name), lambda: InstanceRequest(name),
                  lambda: Resolve(name)):
        with pytest.raises(WireError):
            build()
    with pytest.raises(ConfigError, match="instance name"):
        parseConfig({"instances": [{"name": name, "tcp": 1433}]}, "node.toml")


def test_empty_cluster_addresses_are_refused() -> None:
    with pytest.raises(ConfigError, match="addresses is empty"):
        parseConfig({"cluster": {"addresses": []}}, "node.toml")
    with pytest.raises(ConfigError, match="listen is empty"):
        parseConfig({"node": {"listen": []}}, "node.toml")


def test_a_key_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO is refused at once (not read, which would wait for a writer), and a directory."""
    fifo = tmp_path / "key"
    os.mkfifo(fifo, 0o600)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    with pytest.raises(BadKey, match="is not a regular file"):
        loadKey(fifo)
    with pytest.raises(BadKey, match="is not a regular file"):
        loadKey(tmp_path)


def test_the_harness_runs_valid_commands() -> None:
    """A valid command runs on the fake network, where nothing answers: one line, status 1."""
    assert runInProcess(["resolve", "-t", "1e999", "127.0.0.1\\X"])[:1] == (2,)
    status, _, err = runInProcess(["status", "-t", "0.5", "127.0.0.1"])
    assert (status, err) == (1, "srp: no answer from 127.0.0.1 port 1434 within 0.5 s: no srp "
                             "node listens there, or the cluster name or key differ\n")


@pytest.mark.parametrize("asked", ["::ffff:127.0.0.2", "::FFFF:7f00:2", "127.0.0.2"])
def test_a_reply_from_an_ipv4_mapped_address_is_taken(asked: str) -> None:
    """The reply's source, as the socket reports it, matches the address asked, normalised."""
    assert canonicalAddress(asked) == "127.0.0.2"
    reply = InstancesResponse((InstanceInfo("H", "X", tcp=1433),)).encode()
    resolver = ClusterResolver(Clock())
    resolver.dialects["c"] = "plain"
    query = _Query(resolver, "c", "X", [asked])
    resolutions: list[Resolution] = []
    query.done.addCallback(resolutions.append)
    query.datagramReceived(reply, ("::ffff:127.0.0.2", 1434, 0, 0))
    assert [r.candidates[0].info.tcp for r in resolutions] == [1433]
    browsing = _BrowserQuery(b"\x03", [(asked, 1434)], collect=False)
    browsing.datagramReceived(reply, ("::ffff:127.0.0.2", 1434, 0, 0))
    assert [answer.source[0] for answer in browsing.answers] == ["::ffff:127.0.0.2"]
