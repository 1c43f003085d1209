"""
contrib/: the systemd units pass `systemd-analyze verify`, and the container
recipe's install steps give a node that answers.

No container builder runs here, so the Dockerfile's own steps are performed
in a fresh virtualenv (its RUN lines, read from the Dockerfile) and its
entrypoint is started with a configuration.
"""

from __future__ import annotations

import configparser
import re
import shutil
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from srp.server.config import parseConfig
from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig
from srp.wire import InstanceRequest, InstancesResponse, decodeResponse
from tests.conftest import BIN

ROOT = Path(__file__).parent.parent
SYSTEMD = ROOT / "contrib" / "systemd"
CONTAINER = ROOT / "contrib" / "container"
#: Where the units run srp from: the install steps of docs/operations.md make it.
INSTALLED = "/opt/srp/bin/srp"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / name)
    return parser


@pytest.mark.parametrize("name", ["srp.service", "srp@.service"])
def test_units_say_what_the_node_needs(name: str) -> None:
    service = unit(name)["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].startswith(f"{INSTALLED} serve --config /etc/srp/")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "always"
    assert service["User"] == "srp" and "DynamicUser" not in service
    assert service["LoadCredential"] == "cluster.key:/etc/srp/cluster.key"
    families = set(service["RestrictAddressFamilies"].split())
    assert {"AF_NETLINK", "AF_PACKET", "AF_INET", "AF_INET6", "AF_UNIX"} <= families
    assert set(service["AmbientCapabilities"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert unit(name)["Unit"]["Wants"] == unit(name)["Unit"]["After"] == \
        "network-online.target"
    assert ("%i" in service["ExecStart"]) == ("@" in name)


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    """
    systemd's own check of the units, with no warning.  It insists that
    ExecStart's program exists: the copies checked run the srp installed
    for these tests instead of /opt/srp/bin/srp, the only change.
    """
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "make system-deps installs systemd (systemd-analyze)"
    copies = []
    for name, target in [("srp.service", "srp.service"), ("srp@.service", "srp@.service"),
                         ("srp@.service", "srp@node1.service")]:
        text = (SYSTEMD / name).read_text()
        assert INSTALLED in text
        (tmp_path / target).write_text(text.replace(INSTALLED, str(BIN / "srp")))
        copies.append(str(tmp_path / target))
    result = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    text = (SYSTEMD / "srp.service").read_text().replace(INSTALLED, str(BIN / "srp"))
    (tmp_path / "srp.service").write_text(text.replace("Type=notify", "Type=notfy"))
    result = subprocess.run([analyze, "verify", str(tmp_path / "srp.service")],
                            capture_output=True, text=True, timeout=60)
    assert "Failed to parse service type" in result.stderr


def test_the_compose_cluster_shares_one_namespace_and_one_user() -> None:
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    services = compose["services"]
    assert services["mssql"]["image"].startswith("mcr.microsoft.com/mssql/server")
    nodes = [services[f"node{n}"] for n in (1, 2, 3)]
    for n, node in enumerate(nodes, 1):
        assert node["network_mode"] == services["mssql"]["network_mode"] == "service:net"
        assert node["command"][:2] == ["--config", f"/etc/srp/node{n}.toml"]
    assert "1434:1434/udp" in services["net"]["ports"]
    port = services["mssql"]["environment"]["MSSQL_TCP_PORT"]
    assert f"{port}:{port}/tcp" in services["net"]["ports"]
    dockerfile = (CONTAINER / "Dockerfile").read_text()
    assert re.search(r"^USER srp$", dockerfile, re.MULTILINE)
    assert "--uid 1434" in dockerfile
    assert 'ENTRYPOINT ["/opt/srp/bin/srp", "serve"]' in dockerfile
    assert re.search(r"^FROM debian:\S+-slim$", dockerfile, re.MULTILINE)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_compose_configurations_load_and_advertise_the_published_port(
        n: int, tmp_path: Path) -> None:
    document = tomllib.loads((CONTAINER / "config" / f"node{n}.toml").read_text())
    key = tmp_path / "cluster.key"
    key.write_text("0123456789abcdef0123456789abcdef")
    key.chmod(0o400)
    assert document["cluster"]["key_file"] == "/run/secrets/cluster.key"
    document["cluster"]["key_file"] = str(key)  # the secret, mounted elsewhere here
    config = parseConfig(document, f"node{n}.toml")
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    published = int(compose["services"]["mssql"]["environment"]["MSSQL_TCP_PORT"])
    assert [(r.name, r.info.tcp, r.priority) for r in config.instances] == [
        ("SALES", published, n - 1)]


def installSteps() -> list[str]:
    """The Dockerfile's RUN line that installs srp, as shell."""
    dockerfile = (CONTAINER / "Dockerfile").read_text().replace("\\\n", " ")
    [install] = [line[len("RUN "):] for line in dockerfile.splitlines()
                 if line.startswith("RUN python3 -m venv /opt/srp")]
    return [step.strip() for step in install.split("&&")]


def test_the_dockerfile_install_steps_give_a_node_that_answers(tmp_path: Path) -> None:
    """COPY . /src, then the RUN line with /src and /opt/srp moved under tmp."""
    source, prefix = tmp_path / "src", tmp_path / "opt-srp"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    steps = installSteps()
    assert steps == ["python3 -m venv /opt/srp", "/opt/srp/bin/pip install --no-cache-dir /src",
                     "rm -rf /src"]
    for step in steps[:2]:
        command = step.replace("/opt/srp", str(prefix)).replace("/src", str(source))
        done = subprocess.run(command, shell=True, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    entrypoint = [str(prefix / "bin" / "srp"), "serve"]
    address = freeLoopbackAddress()
    config = writeNodeConfig(tmp_path / "node.toml", [address],
                             [{"name": "SALES", "tcp": 14330, "check": "none"}])
    with NodeProcess(config, tmp_path / "node.log",
                     argv=[*entrypoint, "--config", str(config)]) as node:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(InstanceRequest("SALES").encode(), (address, 1434))
            response = decodeResponse(s.recv(4096))
        assert node.argv[:2] == tuple(entrypoint)
    assert isinstance(response, InstancesResponse)
    assert [(i.instanceName, i.tcp) for i in response.instances] == [("SALES", 14330)]
    assert node.process is not None and node.process.returncode == 0
