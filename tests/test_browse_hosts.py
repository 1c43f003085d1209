"""`srp browse` across hosts: a real broadcast on a LAN of network namespaces."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from srp.testing.netns import lan
from srp.testing.processes import NodeProcess, writeNodeConfig
from tests.conftest import BIN


def test_browse_hears_every_host_on_the_lan(tmp_path: Path) -> None:
    with lan(3) as (a, b, c):
        nodes = []
        for host, name, tcp in ((a, "ALPHA", 50201), (b, "BRAVO", 50202)):
            config = writeNodeConfig(tmp_path / f"{name}.toml", ["0.0.0.0"],
                                     [{"name": name, "tcp": tcp}], serverName=name + "HOST")
            nodes.append(NodeProcess(config, tmp_path / f"{name}.log",
                                     prefix=host.command()).start())
        try:
            for address in ("10.231.0.255", "255.255.255.255"):
                result = subprocess.run(
                    c.command(str(BIN / "srp"), "browse", "--json", "--timeout", "1",
                              "--address", address),
                    capture_output=True, text=True, timeout=30,
                )
                assert result.returncode == 0, result.stderr
                found = {(i["source"], i["instance"], i["tcp"]) for i in json.loads(result.stdout)}
                assert found == {(a.address, "ALPHA", 50201), (b.address, "BRAVO", 50202)}
        finally:
            for node in nodes:
                assert node.stop() == 0, node.log()
