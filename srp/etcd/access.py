"""
How a client gets into etcd: TLS for its C{https://} endpoints (the CA
that signed etcd's certificates, a client certificate and its key), the
Agent policy that applies it, and the password of etcd's authentication.

A node's configuration and the C{srp:} endpoint's options name the same
files with the same names (C{etcd_ca}, C{etcd_cert}, C{etcd_key},
C{etcd_password_file}); both read and check them here, so a mistake is
refused alike, with one message naming the setting, its file and what is
wrong with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import field, frozen
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

#: The settings that name files: a node's configuration keys, and the srp: endpoint's options.
FILE_SETTINGS = ("etcd_password_file", "etcd_ca", "etcd_cert", "etcd_key")


class BadAccess(ValueError):
    """A TLS or password setting for etcd that cannot be used; the message says why."""


@frozen
class TLSSettings:
    """
    How to reach etcd's C{https://} endpoints: the CA that signed their
    certificates (none: the system's), and this client's certificate and key
    in PEM (none: no client certificate).
    """

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)

    def trustRoot(self) -> Any:
        """The CA to check etcd's certificate against (None: the platform's)."""
        return None if self.ca is None else Certificate.loadPEM(self.ca)

    def clientCertificate(self) -> PrivateCertificate | None:
        """This client's certificate with its key, or None."""
        if self.cert is None or self.key is None:
            return None
        certificate: PrivateCertificate = PrivateCertificate.loadPEM(
            self.cert + b"\n" + self.key)
        return certificate


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """
    An Agent's TLS policy for etcd: check each endpoint's certificate against
    C{settings}' CA and name (or IP address), and present the client certificate.
    """

    def __init__(self, settings: TLSSettings) -> None:
        self.trustRoot = settings.trustRoot()
        self.certificate = settings.clientCertificate()

    def creatorForNetloc(self, hostname: bytes,
                         port: int) -> IOpenSSLClientConnectionCreator:
        """The TLS connection creator for an endpoint at C{hostname}."""
        creator: IOpenSSLClientConnectionCreator = optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self.trustRoot,
            clientCertificate=self.certificate)
        return creator


def readFile(option: str, path: str, secret: bool = False) -> bytes:
    """
    The bytes of the file at C{path}, which the setting C{option} names.

    @param secret: whether others must not be able to read it.
    @raise BadAccess: if it cannot be read, or is a C{secret} others may read.
    """
    try:
        mode, data = Path(path).stat().st_mode, Path(path).read_bytes()
    except OSError as e:
        raise BadAccess(f"cannot read {option} {path}: {e.strerror}") from None
    if secret and mode & 0o007:
        raise BadAccess(f"{option} {path} is readable by others; run: chmod 600 {path}")
    return data


def loadPassword(user: str | None, path: str | None) -> str:
    """
    The password of C{user} in the file at C{path} (C{etcd_password_file};
    none: C{""}), which only its owner may read.

    @raise BadAccess: if there is a file but no user, or the file cannot be used.
    """
    if path is None:
        return ""
    if user is None:
        raise BadAccess("etcd_password_file needs etcd_user")
    return readFile("etcd_password_file", path, secret=True).decode(errors="replace").strip()


def loadTLS(endpoints: Sequence[str], ca: str | None = None, cert: str | None = None,
            key: str | None = None) -> TLSSettings | None:
    """
    The TLS settings for C{endpoints} from the files C{ca} (C{etcd_ca}),
    C{cert} (C{etcd_cert}) and C{key} (C{etcd_key}, which only its owner may
    read): None when no endpoint is C{https://}.

    @raise BadAccess: if a file is given for C{http://} endpoints only, a
        certificate without its key (or a key without its certificate), or a
        file that cannot be read or holds no PEM certificate (and key).
    """
    given = [name for name, path in (("etcd_ca", ca), ("etcd_cert", cert), ("etcd_key", key))
             if path is not None]
    if not any(e.startswith("https://") for e in endpoints):
        if given:
            raise BadAccess(f"{given[0]} needs https:// etcd endpoints")
        return None
    if cert is None and key is not None:
        raise BadAccess("etcd_key needs etcd_cert")
    if cert is not None and key is None:
        raise BadAccess("etcd_cert needs etcd_key")
    tls = TLSSettings(None if ca is None else readFile("etcd_ca", ca),
                      None if cert is None else readFile("etcd_cert", cert),
                      None if key is None else readFile("etcd_key", key, secret=True))
    try:
        tls.trustRoot()
    except Exception:
        raise BadAccess(f"etcd_ca {ca} holds no PEM certificate") from None
    try:
        tls.clientCertificate()
    except Exception as e:
        raise BadAccess(f"etcd_cert {cert} and etcd_key {key} are not a PEM certificate "
                        f"and its key ({e.__class__.__name__})") from None
    return tls


def loadAccess(endpoints: Sequence[str], user: str | None,
               files: Mapping[str, str]) -> tuple[str, TLSSettings | None]:
    """
    The password of C{user} and the TLS settings for C{endpoints}, from
    the files that C{files} names by their settings' names (L{FILE_SETTINGS};
    others are ignored).

    @raise BadAccess: as L{loadPassword} and L{loadTLS} do.
    """
    return (loadPassword(user, files.get("etcd_password_file")),
            loadTLS(endpoints, files.get("etcd_ca"), files.get("etcd_cert"),
                    files.get("etcd_key")))
