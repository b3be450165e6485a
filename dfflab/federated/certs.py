"""TLS certificates and SuperNode key pairs for a local Flower deployment.

:func:`make_tls` writes a private certificate authority and a SuperLink server
certificate signed by it (SANs ``127.0.0.1``, ``::1``, ``localhost`` and any given
host names); the SuperLink gets ``server.pem``/``server.key``/``ca.pem``, the
SuperNodes and ``flwr`` trust ``ca.pem``. :func:`make_node_key` writes the EC P-384
key pair a SuperNode signs its requests with (flwr 1.42: OpenSSH format, private key
for ``flower-supernode --auth-supernode-private-key``, public key for
``flwr supernode register``). Everything comes from the ``cryptography`` package
that flwr depends on; no ``openssl`` binary is needed.

    python -c "from dfflab.federated.certs import make_tls; print(make_tls('certs'))"
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a CA certificate and the server certificate/key it signed."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dfflab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_tls(out: str | Path, hosts: tuple[str, ...] = (), days: int = 30) -> TLSFiles:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` under ``out``.

    Args:
        out: folder (created).
        hosts: extra SANs for the server certificate (DNS names or IP addresses of the
            SuperLink machine), on top of localhost / 127.0.0.1 / ::1.
        days: validity.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("dfflab local CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(not_before).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA384()))

    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for host in (*LOCAL_NAMES, *LOCAL_IPS, *hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(_name("dfflab superlink")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA384()))

    files = TLSFiles(out / "ca.pem", out / "server.pem", out / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.key, key)
    return files


def make_node_key(out: str | Path, name: str) -> tuple[Path, Path]:
    """Write a SuperNode's EC P-384 key pair ``<name>`` / ``<name>.pub`` (OpenSSH format).

    Returns:
        (private key path, public key path).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = out / name, out / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b" " +
                       name.encode() + b"\n")
    return private, public
