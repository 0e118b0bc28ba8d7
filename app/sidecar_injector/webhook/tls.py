"""Certificate generation for the webhook's HTTPS endpoint.

The Kubernetes API server calls a mutating webhook over TLS and verifies the
serving certificate against the ``caBundle`` of the webhook configuration.
This module creates a small private CA and a serving certificate signed by it:

* keys are ECDSA P-256 (small certificates, fast handshakes);
* the serving certificate carries every DNS name the API server may use for
  the Service (``NAME``, ``NAME.NS``, ``NAME.NS.svc``,
  ``NAME.NS.svc.cluster.local``) plus any extra DNS names / IP addresses;
* :func:`write_cert_bundle` writes ``ca.crt``, ``tls.crt`` and ``tls.key``
  atomically, so a server that reloads them never reads a half-written file.

All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_COMMON_NAME",
    "CLOCK_SKEW",
    "CertBundlePaths",
    "CertificateAndKey",
    "cert_not_after",
    "generate_ca",
    "generate_private_key",
    "generate_serving_cert",
    "load_certificate",
    "service_dns_names",
    "write_cert_bundle",
]

CA_COMMON_NAME = "sidecar-injector-ca"
"""Subject common name of the generated CA."""

CLOCK_SKEW = dt.timedelta(minutes=5)
"""How far ``not_valid_before`` is backdated, to tolerate clock skew between nodes."""

CA_CERT_FILENAME = "ca.crt"
CERT_FILENAME = "tls.crt"
KEY_FILENAME = "tls.key"

_CERT_FILE_MODE = 0o644
_KEY_FILE_MODE = 0o600

_DNS1123_LABEL_MAX = 63
_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# One label of an extra DNS name: letters are allowed in either case here (DNS is
# case-insensitive); names are lowercased before they go into the certificate.
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", re.IGNORECASE)
_DNS_NAME_MAX = 253


@dataclass(frozen=True)
class CertBundlePaths:
    """Where :func:`write_cert_bundle` put the files."""

    ca_cert: Path  # <out>/ca.crt
    cert: Path  # <out>/tls.crt
    key: Path  # <out>/tls.key


@dataclass(frozen=True)
class CertificateAndKey:
    """A certificate together with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        """The certificate, PEM-encoded."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key, PEM-encoded PKCS#8, unencrypted."""
        return self.key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )


# --------------------------------------------------------------------------- validation


def _validate_dns1123_label(value: str, what: str) -> None:
    """Raise ValueError unless *value* is a Kubernetes DNS-1123 label."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string (got {type(value).__name__})")
    if value == "":
        raise ValueError(f"{what} must not be empty")
    if len(value) > _DNS1123_LABEL_MAX:
        raise ValueError(
            f"{what} {value!r} is not a valid DNS-1123 label: "
            f"must be at most {_DNS1123_LABEL_MAX} characters (got {len(value)})"
        )
    if not _DNS1123_LABEL_RE.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid DNS-1123 label: it must consist of "
            "lowercase alphanumeric characters or '-', and start and end with an "
            "alphanumeric character"
        )


def _validate_days(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer number of days (got {value!r})")
    if value < 1:
        raise ValueError(f"{what} must be at least 1 (got {value})")


def _normalize_dns_name(name: str) -> str:
    """Validate an extra DNS SAN (optionally a leading ``*.`` wildcard) and lowercase it."""
    if not isinstance(name, str) or name == "":
        raise ValueError(f"extra DNS name must be a non-empty string (got {name!r})")
    normalized = name.lower()
    rest = normalized.removeprefix("*.")
    labels = rest.split(".")
    if (
        len(normalized) > _DNS_NAME_MAX
        or not rest
        or not all(len(lbl) <= _DNS1123_LABEL_MAX and _DNS_LABEL_RE.match(lbl) for lbl in labels)
    ):
        raise ValueError(
            f"extra DNS name {name!r} is not a valid DNS name: expected dot-separated "
            "labels of alphanumerics and '-' (optionally starting with '*.')"
        )
    return normalized


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"extra IP {value!r} is not a valid IPv4 or IPv6 address") from None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _as_utc(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        return _utcnow()
    if when.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return when.astimezone(dt.UTC)


# --------------------------------------------------------------------------- generation


def service_dns_names(service: str, namespace: str) -> list[str]:
    """[NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local] — the names the API server may use."""
    _validate_dns1123_label(service, "service name")
    _validate_dns1123_label(namespace, "namespace")
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """digitalSignature for every key (ECDSA: no keyEncipherment); a CA also signs certs and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def generate_ca(
    common_name: str = CA_COMMON_NAME,
    *,
    days: int = 1825,
    now: dt.datetime | None = None,
) -> CertificateAndKey:
    """Generate a self-signed CA certificate that may only sign leaf certificates.

    The CA has ``BasicConstraints(ca=True, path_length=0)`` and key usages
    keyCertSign, cRLSign and digitalSignature (both extensions critical), and a
    subject key identifier. It is valid from ``now - CLOCK_SKEW`` for *days* days.
    """
    _validate_days(days, "ca_days")
    if not common_name:
        raise ValueError("CA common name must not be empty")
    now = _as_utc(now)
    key = generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAndKey(cert=cert, key=key)


def generate_serving_cert(
    ca: CertificateAndKey,
    service: str,
    namespace: str,
    *,
    extra_dns: Sequence[str] = (),
    extra_ips: Sequence[str] = (),
    days: int = 365,
    now: dt.datetime | None = None,
) -> CertificateAndKey:
    """Generate a TLS server certificate for the Service ``service.namespace``, signed by *ca*.

    Subject CN is ``NAME.NS.svc``; the SANs are :func:`service_dns_names` plus
    *extra_dns* (DNS names) and *extra_ips* (IP addresses), duplicates removed.
    Raises ValueError on invalid names/addresses, ``days < 1``, or if the
    certificate would outlive the CA.
    """
    dns_names = service_dns_names(service, namespace)
    _validate_days(days, "days")
    for extra in extra_dns:
        normalized = _normalize_dns_name(extra)
        if normalized not in dns_names:
            dns_names.append(normalized)
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for raw_ip in extra_ips:
        ip = _parse_ip(raw_ip)
        if ip not in ips:
            ips.append(ip)

    now = _as_utc(now)
    not_after = now + dt.timedelta(days=days)
    # Certificates store whole seconds; compare at that precision.
    if not_after.replace(microsecond=0) > ca.cert.not_valid_after_utc:
        raise ValueError(
            f"serving certificate valid for {days} days would outlive its CA "
            f"(CA expires {ca.cert.not_valid_after_utc.isoformat()})"
        )

    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    key = generate_private_key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans.extend(x509.IPAddress(ip) for ip in ips)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service}.{namespace}.svc")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(signs_certificates=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return CertificateAndKey(cert=cert, key=key)


# --------------------------------------------------------------------------- files


def load_certificate(path: Path) -> x509.Certificate:
    """Load the (first) PEM certificate from *path*."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def cert_not_after(path: Path) -> dt.datetime:
    """Expiry (timezone-aware UTC) of the PEM certificate at *path*."""
    return load_certificate(path).not_valid_after_utc


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write *data* to *path* via a temp file in the same directory and ``os.replace``.

    Readers see either the old file or the complete new one, never a partial
    write. The file gets exactly *mode* regardless of the umask.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _fsync_dir(directory: Path) -> None:
    """Persist directory entries (the renames); best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_cert_bundle(
    out_dir: Path,
    service: str,
    namespace: str,
    *,
    extra_dns: Sequence[str] = (),
    extra_ips: Sequence[str] = (),
    days: int = 365,
    ca_days: int = 1825,
) -> CertBundlePaths:
    """Create out_dir if needed; generate a CA and a serving cert signed by it.

    Writes ca.crt, tls.crt (PEM) and tls.key (PEM, PKCS8, unencrypted, file mode 0600).

    Existing files are overwritten atomically (temp file in the same directory,
    then ``os.replace``), so a server reading them never sees a half-written
    file. All inputs are validated before anything is written; invalid input
    raises ValueError.
    """
    _validate_dns1123_label(service, "service name")
    _validate_dns1123_label(namespace, "namespace")
    _validate_days(days, "days")
    _validate_days(ca_days, "ca_days")
    if days > ca_days:
        raise ValueError(
            f"days ({days}) must not exceed ca_days ({ca_days}): the serving certificate must not outlive its CA"
        )

    now = _utcnow()
    ca = generate_ca(days=ca_days, now=now)
    leaf = generate_serving_cert(ca, service, namespace, extra_dns=extra_dns, extra_ips=extra_ips, days=days, now=now)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = CertBundlePaths(
        ca_cert=out / CA_CERT_FILENAME,
        cert=out / CERT_FILENAME,
        key=out / KEY_FILENAME,
    )
    _atomic_write(paths.ca_cert, ca.cert_pem(), _CERT_FILE_MODE)
    _atomic_write(paths.key, leaf.key_pem(), _KEY_FILE_MODE)
    _atomic_write(paths.cert, leaf.cert_pem(), _CERT_FILE_MODE)
    _fsync_dir(out)
    return paths
