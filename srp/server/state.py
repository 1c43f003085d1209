"""
A node's state file: what it keeps across restarts, so that dashboards and
status follow one node.

The file holds the node's id, 16 hex digits on one line.  A node whose
configuration names a state file reads its id there, or picks a random one
and writes it there when the file does not exist yet.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from srp.authenticator import randomNodeId


class StateFileError(Exception):
    """The state file cannot be read or written, or holds no node id; the message says why."""


def parseNodeId(text: str) -> int:
    """
    A node id written as 16 hex digits (surrounding white space ignored).

    @raise ValueError: if C{text} is anything else.
    """
    value = text.strip()
    if len(value) != 16 or not all(c in string.hexdigits for c in value):
        raise ValueError(f"{value!r} is not 16 hex digits")
    return int(value, 16)


def persistentNodeId(path: Path) -> int:
    """
    The node id kept in C{path}; a new random one, written there, if the file does not exist.

    @raise StateFileError: if the file cannot be read or written, or holds
        something else than 16 hex digits.
    """
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not text"
        raise StateFileError(f"{path}: cannot read the node's state file: {reason}") from None
    else:
        try:
            return parseNodeId(text)
        except ValueError:
            raise StateFileError(
                f"{path}: the node's state file holds no node id (16 hex digits); "
                "remove it and the node picks a new id") from None
    nodeId = randomNodeId()
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_text(f"{nodeId:016x}\n", encoding="ascii")
        os.replace(temporary, path)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise StateFileError(f"{path}: cannot write the node's state file: "
                             f"{e.strerror}") from None
    return nodeId
