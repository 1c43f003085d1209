"""
Every TOML example in docs/ is a configuration the node accepts.

Each ```toml block is parsed and validated by the node's own loader, as a
whole file.  The key files the examples name (under /etc, or under
$CREDENTIALS_DIRECTORY) do not exist here: each is replaced by a real key
file of mode 600, and etcd's password file, CA, certificate and key by real
ones (srp.testing.certs), the only liberty taken.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from srp.server.config import parseConfig
from srp.testing.certs import makePKI

DOCS = Path(__file__).parent.parent / "docs"
#: A ```toml fence, at the start of a line or indented in a list item.
BLOCK = re.compile(r"^([ ]*)```toml\n(.*?)^[ ]*```", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.name}:{line}", textwrap.dedent(match.group(2))))
    return found


def test_the_docs_have_toml_examples() -> None:
    assert len(examples()) >= 9


def etcdFiles(cluster: dict[str, str], directory: Path) -> None:
    """Real files for the etcd_* files that C{cluster} names."""
    pki = makePKI(directory / "pki", client="")
    password = directory / "etcd.password"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    real = {"etcd_password_file": password, "etcd_ca": pki.ca.cert,
            "etcd_cert": pki.client.cert, "etcd_key": pki.client.key}
    for key, path in real.items():
        if key in cluster:
            cluster[key] = str(path)


@pytest.mark.parametrize(("where", "text"), examples(), ids=[w for w, _ in examples()])
def test_every_toml_example_loads(where: str, text: str, tmp_path: Path) -> None:
    document = tomllib.loads(text)
    key = tmp_path / "cluster.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    key.chmod(0o600)
    cluster = document.get("cluster", {})
    if "key_file" in cluster and not cluster["key_file"].startswith("$CREDENTIALS_DIRECTORY"):
        cluster["key_file"] = str(key)
    etcdFiles(cluster, tmp_path)
    config = parseConfig(document, where, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    if "key_file" in cluster:
        assert config.cluster is not None and config.cluster.key == key.read_bytes().strip()
