"""The installed distribution: dropins where Twisted looks, and commands on PATH."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import BIN

PURELIB = Path(sysconfig.get_paths()["purelib"])


def outside(code: str, cwd: Path) -> str:
    """Run Python C{code} in the test virtualenv, away from the source tree."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_installed_as_regular_files() -> None:
    assert (PURELIB / "twisted" / "plugins" / "srp_node.py").is_file()
    assert (PURELIB / "twisted" / "plugins" / "srp_endpoints.py").is_file()
    assert (PURELIB / "twisted" / "plugins" / "srp_via.py").is_file()
    assert (PURELIB / "twisted" / "plugins" / "srp_np.py").is_file()
    for dropin in ("srp_transports.py", "srp_verifiers.py", "srp_vi.py", "srp_checks.py"):
        assert (PURELIB / "twisted" / "plugins" / dropin).is_file()
    assert (PURELIB / "srp" / "transports" / "via" / "connection.py").is_file()
    assert (PURELIB / "srp" / "wire" / "mcsqlr.py").is_file()
    assert (PURELIB / "srp" / "testing" / "processes.py").is_file()
    assert (PURELIB / "srp" / "py.typed").is_file()
    assert not (PURELIB / "twisted" / "plugins" / "__init__.py").exists() or (
        "srp" not in (PURELIB / "twisted" / "plugins" / "__init__.py").read_text())


def test_imported_from_site_packages(tmp_path: Path) -> None:
    where = outside("import srp; print(srp.__file__)", tmp_path)
    assert Path(where.strip()).is_relative_to(PURELIB)


def test_twisted_finds_the_service_maker(tmp_path: Path) -> None:
    found = outside(
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "print(sorted(p.tapname for p in getPlugins(IServiceMaker)))", tmp_path)
    assert "'srp'" in found


def test_client_from_string_finds_the_srp_endpoint(tmp_path: Path) -> None:
    found = outside(
        "from twisted.internet import reactor\n"
        "from twisted.internet.endpoints import clientFromString\n"
        "print(type(clientFromString(reactor, 'srp:db1/SALES')).__name__)", tmp_path)
    assert found.strip() == "SRPClientEndpoint"


def test_twisted_finds_the_transports_verifiers_and_vi_provider(tmp_path: Path) -> None:
    found = outside(
        "from twisted.plugin import getPlugins\n"
        "from srp.interfaces import IHealthCheck, IInstanceVerifier, IPortMapTransport, "
        "IVIProvider\n"
        "for kind in (IPortMapTransport, IInstanceVerifier, IVIProvider, IHealthCheck):\n"
        "    print(sorted(p.name for p in getPlugins(kind)))", tmp_path)
    assert found.splitlines() == ["['np', 'tcp', 'via']", "['hello', 'none', 'tds']",
                                  "['emulated']", "['none', 'tcp', 'tds']"]


def test_twistd_help_lists_srp(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "twistd"), "--help"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0
    [line] = [line for line in result.stdout.splitlines() if line.split()[:1] == ["srp"]]
    assert "SQL Server Browser" in line
