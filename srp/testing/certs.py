"""
Throw-away certificates for tests: a CA, a server certificate for loopback
addresses and a client certificate it signed, written as PEM files (keys
with mode 0600), made with the C{cryptography} package.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: A server's certificate is a client's too: etcd's JSON gateway presents
#: it to etcd's own gRPC port.
BOTH = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


@frozen
class CertificateFiles:
    """Where one certificate and its key are."""

    cert: Path
    key: Path


@frozen
class PKI:
    """A CA, and a server and a client certificate it signed."""

    ca: CertificateFiles
    server: CertificateFiles
    client: CertificateFiles


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)] if common else [])


def _write(directory: Path, stem: str, certificate: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> CertificateFiles:
    files = CertificateFiles(directory / f"{stem}.pem", directory / f"{stem}-key.pem")
    files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.key.touch(mode=0o600)
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


def _sign(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          signer: ec.EllipticCurvePrivateKey, ca: bool = False,
          hosts: tuple[str, ...] = (), usage: tuple[x509.ObjectIdentifier, ...] = (),
          ) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    return builder.sign(signer, hashes.SHA256())


def makePKI(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1",),
            name: str = "srp test CA", client: str = "srp") -> PKI:
    """
    Write a new CA (C{ca.pem}), a server certificate for the IP addresses
    C{hosts} (C{server.pem}, good for client authentication too) and a
    client certificate whose common name is C{client} (C{client.pem}; "":
    none, as etcd's JSON gateway wants when etcd's authentication is on),
    each with its key, into C{directory}.
    """
    directory.mkdir(parents=True, exist_ok=True)
    caKey = ec.generate_private_key(ec.SECP256R1())
    caCert = _sign(name, caKey, _name(name), caKey, ca=True)
    serverKey, clientKey = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    return PKI(
        _write(directory, "ca", caCert, caKey),
        _write(directory, "server", _sign("etcd", serverKey, caCert.subject, caKey,
                                          hosts=hosts, usage=BOTH),
               serverKey),
        _write(directory, "client", _sign(client, clientKey, caCert.subject, caKey,
                                          usage=BOTH[1:]), clientKey))
