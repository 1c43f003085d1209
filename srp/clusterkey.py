"""
Where the cluster key comes from: a key file that others may not access, or
C{$SRP_CLUSTER_KEY}.  Nodes read it from their configuration, clients from
C{key_file=} or C{--key-file}.

The rule for a key file's mode: no access at all for others, and no write
access for its group (600, 400, or 640 for a key owned by root and read by
the group the nodes run as).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

#: The environment variable that may hold the cluster key instead of a file.
KEY_ENVIRONMENT = "SRP_CLUSTER_KEY"
#: The shortest cluster key accepted, in bytes.
MIN_KEY = 16


class BadKey(Exception):
    """A cluster key that cannot be used; the message says why."""


def loadKey(path: str | Path) -> bytes:
    """
    Read a cluster key file.

    @raise BadKey: if it is not a regular file, cannot be read, others may
        access it, its group may write it, or it is too short.
    """
    path = Path(path)
    try:
        # Not blocking: a FIFO given as the key file must be refused, not waited on.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise BadKey(f"the key file {path} is not a regular file")
            with open(fd, "rb", closefd=False) as f:
                key = f.read().strip()
        finally:
            os.close(fd)
    except OSError as e:
        raise BadKey(f"cannot read the key file {path}: {e.strerror}") from None
    if mode & 0o007:
        raise BadKey(f"the key file {path} is open to others (mode {mode & 0o777:03o}); "
                     f"run: chmod 600 {path}")
    if mode & 0o020:
        raise BadKey(f"the key file {path} is writable by its group (mode "
                     f"{mode & 0o777:03o}); run: chmod 600 {path}")
    return _checkedKey(key, f"the key file {path}")


def environmentKey(environ: Mapping[str, str]) -> bytes:
    """
    The cluster key in C{$SRP_CLUSTER_KEY}, or C{b""} if it is not set.

    @raise BadKey: if it is too short.
    """
    value = environ.get(KEY_ENVIRONMENT, "")
    return _checkedKey(value.encode("utf-8"), f"${KEY_ENVIRONMENT}") if value else b""


def _checkedKey(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY:
        raise BadKey(f"{source} holds {len(key)} bytes; a cluster key needs at least "
                     f"{MIN_KEY} (try: head -c 32 /dev/urandom | base64)")
    return key
