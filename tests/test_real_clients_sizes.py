"""
Real clients against the size limits: a long single-instance reply and a
registry too large for one enumeration reply.

sqlserverport reads 1,024 bytes of a reply and crashes on a cut one;
python-tds reads 16,383.  srp keeps its replies within both (see the size
rules in docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlserverport
from pytds.instance_browser_client import tds7_get_instances

from srp.testing.processes import NodeProcess, freeLoopbackAddress, writeNodeConfig

#: With this pipe, RESP_DATA is 1,022 bytes: within [MC-SQLR]'s 1,024, but
#: a 1,025-byte datagram, which sqlserverport would read cut and crash on.
LONG_PIPE = "\\\\SRPTEST\\pipe\\" + "p" * 916
COUNT = 400


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("crowded")
    instances: list[dict[str, Any]] = [{"name": "LONGPIPE", "tcp": 50400, "np": LONG_PIPE}]
    instances += [{"name": f"INST{n:03d}", "tcp": 51000 + n,
                   "np": f"\\\\SRPTEST\\pipe\\MSSQL$INST{n:03d}\\sql\\query"}
                  for n in range(COUNT)]
    host = freeLoopbackAddress()
    config = writeNodeConfig(directory / "node.toml", [host], instances)
    with NodeProcess(config, directory / "node.log"):
        yield host


def test_sqlserverport_reads_a_reply_at_the_size_limit(crowded: str) -> None:
    assert sqlserverport.lookup(crowded, "LONGPIPE") == 50400


def test_python_tds_parses_every_instance_of_a_truncated_enumeration(crowded: str) -> None:
    instances = tds7_get_instances(crowded, timeout=2)
    assert instances is not None
    assert 150 < len(instances) < COUNT
    for name, fields in instances.items():
        if name != "LONGPIPE":
            assert int(fields["tcp"]) == 51000 + int(name[4:]), fields
