"""Tests for sidecar_injector.webhook.tls: the CA / serving certificate bundle used by the webhook's HTTPS server."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    DNSName,
    IPAddress,
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from sidecar_injector.webhook import tls
from sidecar_injector.webhook.tls import CertBundlePaths, cert_not_after, service_dns_names, write_cert_bundle

SERVICE = "sidecar-injector"
NAMESPACE = "injector-system"
SVC_DNS = f"{SERVICE}.{NAMESPACE}.svc"
EXTRA_DNS = ("localhost", "webhook.example.com")
EXTRA_IPS = ("127.0.0.1", "::1")


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _server_verifier(ca: x509.Certificate, name: str) -> ServerVerifier:
    return PolicyBuilder().store(Store([ca])).build_server_verifier(DNSName(name))


@pytest.fixture
def bundle(tmp_path: Path) -> CertBundlePaths:
    return write_cert_bundle(tmp_path / "certs", SERVICE, NAMESPACE, extra_dns=EXTRA_DNS, extra_ips=EXTRA_IPS)


@pytest.fixture
def ca_cert(bundle: CertBundlePaths) -> x509.Certificate:
    return _load_cert(bundle.ca_cert)


@pytest.fixture
def leaf_cert(bundle: CertBundlePaths) -> x509.Certificate:
    return _load_cert(bundle.cert)


# --------------------------------------------------------------------------- names


def test_service_dns_names_lists_the_four_forms_in_order() -> None:
    assert service_dns_names("hook", "ns") == [
        "hook",
        "hook.ns",
        "hook.ns.svc",
        "hook.ns.svc.cluster.local",
    ]


def test_bundle_paths_are_the_standard_file_names_in_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "dir"
    paths = write_cert_bundle(out, SERVICE, NAMESPACE)
    assert paths == CertBundlePaths(ca_cert=out / "ca.crt", cert=out / "tls.crt", key=out / "tls.key")
    assert b"-----BEGIN CERTIFICATE-----" in paths.ca_cert.read_bytes()
    assert b"-----BEGIN CERTIFICATE-----" in paths.cert.read_bytes()
    # PKCS#8, unencrypted
    assert paths.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_serving_cert_sans_are_exactly_service_names_plus_extras(
    leaf_cert: x509.Certificate,
) -> None:
    san = leaf_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        SERVICE,
        f"{SERVICE}.{NAMESPACE}",
        f"{SERVICE}.{NAMESPACE}.svc",
        f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
        *EXTRA_DNS,
    ]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip) for ip in EXTRA_IPS]
    assert len(list(san)) == 4 + len(EXTRA_DNS) + len(EXTRA_IPS)


def test_serving_cert_common_name_is_name_ns_svc(leaf_cert: x509.Certificate) -> None:
    cns = leaf_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cns] == [SVC_DNS]


def test_duplicate_extra_names_are_not_repeated_in_sans(tmp_path: Path) -> None:
    paths = write_cert_bundle(
        tmp_path,
        "hook",
        "ns",
        extra_dns=["hook.ns.svc", "LocalHost", "localhost"],
        extra_ips=["10.0.0.1", "10.0.0.1"],
    )
    san = _load_cert(paths.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [*service_dns_names("hook", "ns"), "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]


# --------------------------------------------------------------------------- extensions


def test_keys_are_ecdsa_p256_and_signatures_sha256(ca_cert: x509.Certificate, leaf_cert: x509.Certificate) -> None:
    for cert in (ca_cert, leaf_cert):
        public_key = cert.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP256R1)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_ca_is_self_signed_with_ca_basic_constraints_and_cert_sign_usage(
    ca_cert: x509.Certificate,
) -> None:
    assert ca_cert.subject == ca_cert.issuer
    assert ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sidecar-injector-ca"

    bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True
    assert bc.value.path_length == 0

    ku = ca_cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign is True
    assert ku.value.crl_sign is True

    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())


def test_serving_cert_is_a_non_ca_server_auth_leaf(leaf_cert: x509.Certificate) -> None:
    bc = leaf_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False

    ku = leaf_cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature is True
    assert ku.value.key_encipherment is False
    assert ku.value.key_cert_sign is False

    eku = leaf_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    ski = leaf_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf_cert.public_key())


def test_serving_cert_authority_key_id_matches_ca_subject_key_id(
    ca_cert: x509.Certificate, leaf_cert: x509.Certificate
) -> None:
    aki = leaf_cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert leaf_cert.issuer == ca_cert.subject


# --------------------------------------------------------------------------- chain verification


@pytest.mark.parametrize(
    "name",
    [
        SERVICE,
        f"{SERVICE}.{NAMESPACE}",
        SVC_DNS,
        f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
        "webhook.example.com",
    ],
)
def test_chain_verifies_for_every_san_dns_name(ca_cert: x509.Certificate, leaf_cert: x509.Certificate, name: str) -> None:
    chain = _server_verifier(ca_cert, name).verify(leaf_cert, [])
    assert chain[0] == leaf_cert
    assert chain[-1] == ca_cert


def test_chain_verifies_for_extra_ip_address(ca_cert: x509.Certificate, leaf_cert: x509.Certificate) -> None:
    verifier = PolicyBuilder().store(Store([ca_cert])).build_server_verifier(IPAddress(ipaddress.ip_address("127.0.0.1")))
    assert verifier.verify(leaf_cert, [])[-1] == ca_cert


def test_chain_verification_fails_for_name_not_in_sans(ca_cert: x509.Certificate, leaf_cert: x509.Certificate) -> None:
    with pytest.raises(VerificationError):
        _server_verifier(ca_cert, "other-service.injector-system.svc").verify(leaf_cert, [])


def test_chain_verification_fails_against_a_different_ca(tmp_path: Path, leaf_cert: x509.Certificate) -> None:
    other = write_cert_bundle(tmp_path / "other", SERVICE, NAMESPACE)
    other_ca = _load_cert(other.ca_cert)
    with pytest.raises(VerificationError):
        _server_verifier(other_ca, SVC_DNS).verify(leaf_cert, [])


# --------------------------------------------------------------------------- key


def test_private_key_matches_certificate_public_key(bundle: CertBundlePaths, leaf_cert: x509.Certificate) -> None:
    key = _load_key(bundle.key)
    cert_public = leaf_cert.public_key()
    assert isinstance(cert_public, ec.EllipticCurvePublicKey)
    assert key.public_key().public_numbers() == cert_public.public_numbers()

    message = b"admission review"
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    cert_public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        cert_public.verify(signature, b"tampered", ec.ECDSA(hashes.SHA256()))


def test_private_key_file_is_owner_read_write_only(bundle: CertBundlePaths) -> None:
    assert stat.S_IMODE(bundle.key.stat().st_mode) == 0o600


def test_certificate_files_are_world_readable_regardless_of_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        paths = write_cert_bundle(tmp_path, SERVICE, NAMESPACE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(paths.cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(paths.ca_cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- validity


def test_serving_cert_is_valid_now_and_expires_after_requested_days(tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC)
    paths = write_cert_bundle(tmp_path, SERVICE, NAMESPACE, days=30, ca_days=90)
    after = dt.datetime.now(dt.UTC)
    leaf = _load_cert(paths.cert)

    assert leaf.not_valid_before_utc <= before
    # backdated by about 5 minutes for clock skew, not more
    assert before - leaf.not_valid_before_utc <= dt.timedelta(minutes=5, seconds=5)
    assert after <= leaf.not_valid_after_utc
    expected = before + dt.timedelta(days=30)
    assert abs(leaf.not_valid_after_utc - expected) <= dt.timedelta(minutes=1)
    assert cert_not_after(paths.cert) == leaf.not_valid_after_utc
    assert cert_not_after(paths.cert).tzinfo is not None


def test_ca_expires_after_ca_days(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    paths = write_cert_bundle(tmp_path, SERVICE, NAMESPACE, days=10, ca_days=100)
    assert abs(cert_not_after(paths.ca_cert) - (now + dt.timedelta(days=100))) <= dt.timedelta(minutes=1)


def test_serving_cert_does_not_outlive_ca(ca_cert: x509.Certificate, leaf_cert: x509.Certificate) -> None:
    assert leaf_cert.not_valid_after_utc <= ca_cert.not_valid_after_utc
    assert leaf_cert.not_valid_before_utc >= ca_cert.not_valid_before_utc


def test_serving_cert_may_last_as_long_as_ca(tmp_path: Path) -> None:
    paths = write_cert_bundle(tmp_path, SERVICE, NAMESPACE, days=7, ca_days=7)
    assert cert_not_after(paths.cert) <= cert_not_after(paths.ca_cert)


def test_generate_serving_cert_refuses_to_outlive_an_existing_ca() -> None:
    ca = tls.generate_ca(days=10)
    with pytest.raises(ValueError, match="outlive"):
        tls.generate_serving_cert(ca, SERVICE, NAMESPACE, days=11)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("service", "namespace", "kwargs", "message"),
    [
        ("Sidecar-Injector", NAMESPACE, {}, r"service name 'Sidecar-Injector' is not a valid DNS-1123 label"),
        ("-hook", NAMESPACE, {}, r"service name '-hook' is not a valid DNS-1123 label"),
        ("hook.x", NAMESPACE, {}, r"service name 'hook\.x' is not a valid DNS-1123 label"),
        ("a" * 64, NAMESPACE, {}, r"service name .* at most 63 characters"),
        (SERVICE, "", {}, r"namespace must not be empty"),
        (SERVICE, "kube_system", {}, r"namespace 'kube_system' is not a valid DNS-1123 label"),
        (SERVICE, NAMESPACE, {"days": 400, "ca_days": 365}, r"days \(400\) must not exceed ca_days \(365\)"),
        (SERVICE, NAMESPACE, {"days": 0}, r"days must be at least 1 \(got 0\)"),
        (SERVICE, NAMESPACE, {"days": 1, "ca_days": 0}, r"ca_days must be at least 1 \(got 0\)"),
        (SERVICE, NAMESPACE, {"extra_ips": ["300.1.1.1"]}, r"extra IP '300\.1\.1\.1' is not a valid"),
        (SERVICE, NAMESPACE, {"extra_dns": ["bad name"]}, r"extra DNS name 'bad name' is not a valid"),
    ],
)
def test_invalid_input_raises_value_error_naming_the_problem(
    tmp_path: Path, service: str, namespace: str, kwargs: dict[str, object], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        write_cert_bundle(out, service, namespace, **kwargs)  # type: ignore[arg-type]
    assert not out.exists(), "nothing must be written for invalid input"


# --------------------------------------------------------------------------- regeneration


def test_regenerating_replaces_files_with_a_new_valid_chain(tmp_path: Path) -> None:
    first = write_cert_bundle(tmp_path, SERVICE, NAMESPACE)
    old_ca, old_leaf = _load_cert(first.ca_cert), _load_cert(first.cert)
    old_key = first.key.read_bytes()

    second = write_cert_bundle(tmp_path, SERVICE, NAMESPACE)
    assert second == first
    new_ca, new_leaf = _load_cert(second.ca_cert), _load_cert(second.cert)

    assert new_leaf.serial_number != old_leaf.serial_number
    assert new_ca.serial_number != old_ca.serial_number
    assert second.key.read_bytes() != old_key
    assert _server_verifier(new_ca, SVC_DNS).verify(new_leaf, [])[-1] == new_ca
    with pytest.raises(VerificationError):
        _server_verifier(old_ca, SVC_DNS).verify(new_leaf, [])
    assert stat.S_IMODE(second.key.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]


def test_failed_replace_keeps_old_file_and_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_cert_bundle(tmp_path, SERVICE, NAMESPACE)
    old_ca = first.ca_cert.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tls.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_cert_bundle(tmp_path, SERVICE, NAMESPACE)

    assert first.ca_cert.read_bytes() == old_ca
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]


# --------------------------------------------------------------------------- real TLS handshake


@pytest.fixture
def tls_server(bundle: CertBundlePaths) -> Iterator[int]:
    """Serve TLS with the generated tls.crt/tls.key on 127.0.0.1; yield the port.

    Each accepted connection is handshaken and answered with b"ok". The accept
    loop polls a stop event so the thread always ends when the test finishes.
    """
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certfile=bundle.cert, keyfile=bundle.key)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # e.g. the client rejected our certificate
            finally:
                conn.close()

    thread = threading.Thread(target=serve, name="test-tls-server", daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        assert not thread.is_alive(), "TLS server thread did not stop"


def _client_context(ca_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies cert and hostname by default
    ctx.load_verify_locations(cafile=ca_file)  # the only trust anchor
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _handshake(port: int, ctx: ssl.SSLContext, server_hostname: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_hostname) as tls_sock:
            assert tls_sock.version() in ("TLSv1.2", "TLSv1.3")
            return tls_sock.recv(2)


def test_tls_handshake_succeeds_with_generated_ca_and_service_hostname(tls_server: int, bundle: CertBundlePaths) -> None:
    assert _handshake(tls_server, _client_context(bundle.ca_cert), SVC_DNS) == b"ok"


def test_tls_handshake_fails_for_hostname_not_in_certificate(tls_server: int, bundle: CertBundlePaths) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls_server, _client_context(bundle.ca_cert), "wrong.example")


def test_tls_handshake_fails_when_trusting_a_different_ca(tls_server: int, tmp_path: Path) -> None:
    other = write_cert_bundle(tmp_path / "other", SERVICE, NAMESPACE)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls_server, _client_context(other.ca_cert), SVC_DNS)
