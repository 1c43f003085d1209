"""
`make demo`: run an srp node on loopback and resolve instances through it.

Starts `srp serve` with the instances of examples/node.toml on a free
127.0.0.N address, asks it what real SQL Server clients ask (enumerate, one
instance, the DAC port, a hidden instance), prints each exchange and stops
the node.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from srp.testing import NodeProcess, freeLoopbackAddress, writeNodeConfig

HERE = Path(__file__).parent


def run(*arguments: str) -> None:
    command = [str(Path(sys.executable).with_name("srp")), *arguments]
    print(f"\n$ srp {' '.join(arguments)}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    print((result.stdout + result.stderr).rstrip())
    print(f"(exit status {result.returncode})")


def main() -> None:
    example = tomllib.loads((HERE / "node.toml").read_text())
    address = freeLoopbackAddress()
    with tempfile.TemporaryDirectory() as scratch:
        config = writeNodeConfig(Path(scratch) / "node.toml", [address], example["instances"],
                                 serverName=example["node"]["server_name"])
        with NodeProcess(config, Path(scratch) / "node.log") as node:
            print(f"srp node started (pid {node.pid}) on {address}:1434/udp "
                  f"with the instances of examples/node.toml")
            run("enumerate", address)
            run("resolve", f"{address}\\sales")
            run("resolve", "--json", f"{address}/REPORTS")
            run("resolve", "--dac", f"{address}\\SALES")
            run("resolve", "--timeout", "1", f"{address}\\AUDIT")
            print("\nAUDIT is hidden (HideInstance): the node never answers for it.")
        print(f"\nsrp node stopped. Its log:\n{node.log().rstrip()}")


if __name__ == "__main__":
    main()
