"""The intercept CA (``veilpix._ca``), ``[intercept]`` in veilpix.toml, ``veilpix ca`` and
``veilpix env``. Name constraints are checked by two independent verifiers: the ``openssl``
binary and Python's ssl in real handshakes on loopback. Temporary folders only: the user
data folder is never touched (VEILPIX_CA_DIR and XDG_DATA_HOME point into tmp_path)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import veilpix
from veilpix import adapters
from veilpix._ca import Authority, read_system_roots, write_bundle
from veilpix._config import load_config
from veilpix._errors import CAError, ConfigError, VeilpixError
from veilpix._net import covered, permitted_domains, uncovered_patterns, vendor_domains
from veilpix.cli._main import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and /dev/fd")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VEILPIX_CONFIG", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VEILPIX_CA_DIR", str(tmp_path / "default-ca"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.init(tmp_path / "ca")


# -- helpers ------------------------------------------------------------------------------------


def ca_key(authority: Authority) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(authority.key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def forge(authority: Authority, *names: x509.GeneralName) -> tuple[bytes, bytes]:
    """A leaf signed with the CA's own key for any names: what a thief of the key could make."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forged")]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # (as a careful thief would: Python 3.13's strict checks refuse a leaf without it
        # before the name constraints are even looked at)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key(authority).public_key()),
            critical=False,
        )
        .sign(ca_key(authority), hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def client_context(authority: Authority) -> ssl.SSLContext:
    """A client that trusts the veilpix CA and nothing else."""
    context = ssl.create_default_context(cafile=str(authority.cert_path))
    context.set_alpn_protocols(["http/1.1"])
    return context


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str | None
) -> tuple[bytes, str | None]:
    """One TLS handshake over TCP loopback; returns the leaf the client saw (DER) and the ALPN
    protocol, or raises the client's error. The server side's error is swallowed: the client
    is the party whose verdict matters."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(10)
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
                tls.recv(1)
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        with client.wrap_socket(raw, server_hostname=server_hostname) as tls:
            assert tls.recv(2) == b"ok"
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der, tls.selected_alpn_protocol()
    finally:
        thread.join(10)
        listener.close()


def openssl_verify(tmp_path: Path, authority: Authority, leaf_pem: bytes) -> tuple[int, str]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl binary is not installed")
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(leaf_pem)
    done = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            str(authority.cert_path),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return done.returncode, done.stdout + done.stderr


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def self_signed(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


# -- which names -----------------------------------------------------------------------------------


def test_permitted_subtrees_cover_the_vendors_and_nothing_broad() -> None:
    domains = vendor_domains()
    # each registered concrete host, and a host under each expressible *.zone pattern
    for vendor in adapters.vendors():
        for pattern in vendor.host_patterns:
            if pattern in uncovered_patterns():
                continue
            host = pattern.replace("*", "myresource")
            assert covered(host, domains), (vendor.name, pattern)
            assert adapters.match(host) is not None
    assert {
        "api.openai.com",
        "openai.azure.com",
        "cognitiveservices.azure.com",
        "services.ai.azure.com",
        "generativelanguage.googleapis.com",
        "europe-west4-aiplatform.googleapis.com",
        "aiplatform.googleapis.com",
        "fal.run",
        "api.eu.bfl.ai",
    } <= set(domains)
    # never a parent that holds other people's services
    for broad in (
        "googleapis.com",
        "azure.com",
        "openai.com",
        "fal.ai",
        "fal.media",
        "bfl.ai",
        "mistral.ai",
        "anthropic.com",
        "google.com",
        "com",
        "ai",
    ):
        assert broad not in domains
        assert not covered(broad, domains)
    for unrelated in (
        "storage.googleapis.com",
        "accounts.google.com",
        "www.example.com",
        "management.azure.com",
        "chatgpt.com",
        "fal.ai",
        "api.openai.com.evil.test",
    ):
        assert not covered(unrelated, domains)
    # minimal: no entry sits inside another one's subtree (eu.api.openai.com is in api.openai.com)
    assert not any(covered(a, [b]) for a in domains for b in domains if a != b)
    assert domains == tuple(sorted(domains))


def test_patterns_no_subtree_expresses_are_enumerated_not_widened() -> None:
    assert uncovered_patterns() == ("*-aiplatform.googleapis.com",)
    vertex = adapters.get("vertex_ai")
    listed = [h for r in vertex.regions for h in r.hosts if "*" not in h]
    assert len(listed) > 20 and all(covered(h, vendor_domains()) for h in listed)
    # a region the adapter does not list is not covered until it is added as an extra domain
    assert not covered("asia-southeast2-aiplatform.googleapis.com", vendor_domains())
    extra = permitted_domains(["asia-southeast2-aiplatform.googleapis.com"])
    assert covered("asia-southeast2-aiplatform.googleapis.com", extra)


def test_extra_domains_are_checked_merged_and_minimal() -> None:
    domains = permitted_domains(
        ["Gateway.Corp.Example.", "eu.api.openai.com", "a.gateway.corp.example"]
    )
    assert "gateway.corp.example" in domains
    assert "a.gateway.corp.example" not in domains and "eu.api.openai.com" not in domains
    assert len(domains) == len(vendor_domains()) + 1
    with pytest.raises(ConfigError, match="too broad"):
        permitted_domains(["googleapis.com"])


# -- the CA certificate and its files ----------------------------------------------------------------


def test_init_writes_a_0600_key_and_a_public_certificate(ca: Authority) -> None:
    assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.cert_path.stat().st_mode) == 0o644
    assert b"PRIVATE KEY" in ca.key_path.read_bytes()
    assert b"PRIVATE KEY" not in ca.cert_path.read_bytes()
    assert ca.cert_path.read_bytes() == ca.cert_pem
    assert sorted(p.name for p in ca.directory.iterdir()) == ["ca-key.pem", "ca.pem"]


def test_ca_certificate_is_name_constrained_p256_and_signs_leaves_only(ca: Authority) -> None:
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    permitted = nc.value.permitted_subtrees or []
    assert all(isinstance(n, x509.DNSName) for n in permitted)
    assert tuple(n.value for n in permitted) == vendor_domains() == ca.permitted
    assert set(nc.value.excluded_subtrees or []) == {
        x509.IPAddress(ipaddress.IPv4Network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.IPv6Network("::/0")),
    }
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature and not ku.value.key_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.subject == cert.issuer and "veilpix intercept CA" in cert.subject.rfc4514_string()
    assert ca.fingerprint == cert.fingerprint(hashes.SHA256()).hex(":").upper()


def test_init_refuses_to_overwrite_and_load_reads_it_back(ca: Authority) -> None:
    with pytest.raises(CAError, match="already exists"):
        Authority.init(ca.directory)
    again = Authority.load(ca.directory)
    assert again.fingerprint == ca.fingerprint and again.permitted == ca.permitted


def test_load_errors(tmp_path: Path, ca: Authority) -> None:
    with pytest.raises(CAError, match="no veilpix CA") as info:
        Authority.load(tmp_path / "nowhere")
    assert "veilpix ca init" in str(info.value)
    ca.key_path.chmod(0o644)
    with pytest.raises(CAError, match="readable by other users") as info:
        Authority.load(ca.directory)
    assert "chmod 600" in str(info.value)
    ca.key_path.chmod(0o600)
    other = Authority.init(tmp_path / "other")
    key_pem = other.key_path.read_bytes().split(b"-----BEGIN CERTIFICATE-----")[0]
    ca.key_path.write_bytes(key_pem + ca.cert_pem)  # someone else's key with our certificate
    with pytest.raises(CAError, match="does not belong"):
        Authority.load(ca.directory)
    ca.key_path.write_bytes(b"garbage")
    with pytest.raises(CAError, match="damaged"):
        Authority.load(ca.directory)


def test_a_missing_public_copy_is_written_again(ca: Authority) -> None:
    ca.cert_path.unlink()
    Authority.load(ca.directory)
    assert ca.cert_path.read_bytes() == ca.cert_pem


def test_extra_domains_are_baked_in_and_missing_names_reported(tmp_path: Path) -> None:
    ca = Authority.init(tmp_path / "ca", extra_domains=["gateway.corp.example"])
    assert "gateway.corp.example" in ca.permitted and ca.permits("x.gateway.corp.example")
    assert ca.missing(["gateway.corp.example"]) == ()
    assert ca.missing(["other.corp.example"]) == ("other.corp.example",)


# -- independent verifiers: openssl and Python's ssl ------------------------------------------------


def test_openssl_accepts_served_leaves_and_rejects_forged_ones(
    tmp_path: Path, ca: Authority
) -> None:
    for host in (
        "api.openai.com",
        "myres.openai.azure.com",
        "us-central1-aiplatform.googleapis.com",
    ):
        der, _ = handshake(ca.server_context(), client_context(ca), host)
        code, out = openssl_verify(tmp_path, ca, ssl.DER_cert_to_PEM_cert(der).encode())
        assert code == 0 and ": OK" in out, out
    # the CA's key signs anything; the verifier refuses what the constraints do not permit
    code, out = openssl_verify(tmp_path, ca, forge(ca, x509.DNSName("x.api.openai.com"))[0])
    assert code == 0, out  # a subtree holds its subdomains
    for name in (
        "www.example.com",
        "accounts.google.com",
        "storage.googleapis.com",
        "management.azure.com",
    ):
        code, out = openssl_verify(tmp_path, ca, forge(ca, x509.DNSName(name))[0])
        assert code != 0 and "permitted subtree violation" in out, (name, out)
    ip = x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))
    code, out = openssl_verify(tmp_path, ca, forge(ca, x509.DNSName("api.openai.com"), ip)[0])
    assert code != 0 and "excluded subtree violation" in out, out


def test_python_handshake_with_the_ca_as_only_trust_anchor(ca: Authority) -> None:
    der, alpn = handshake(ca.server_context(), client_context(ca), "api.openai.com")
    assert alpn == "http/1.1"
    leaf = x509.load_der_x509_certificate(der)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["api.openai.com"]
    assert leaf.issuer == ca.certificate.subject
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    now = dt.datetime.now(dt.UTC)
    assert leaf.not_valid_before_utc < now - dt.timedelta(hours=12)  # backdated
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=31)
    # the SNI picks the leaf; a name the CA may not sign for gets no certificate at all
    der, _ = handshake(ca.server_context(), client_context(ca), "eu.api.openai.com")
    assert "eu.api.openai.com" in str(x509.load_der_x509_certificate(der).subject)
    refused: list[str | None] = []
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        handshake(
            ca.server_context(on_refuse=refused.append), client_context(ca), "www.example.com"
        )
    assert refused == ["www.example.com"]


def test_python_client_rejects_a_forged_leaf_for_another_site(
    tmp_path: Path, ca: Authority
) -> None:
    cert_pem, key_pem = forge(ca, x509.DNSName("www.example.com"))
    (tmp_path / "f.pem").write_bytes(cert_pem)
    (tmp_path / "f.key").write_bytes(key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "f.pem", tmp_path / "f.key")
    with pytest.raises(ssl.SSLCertVerificationError, match="permitted subtree violation"):
        handshake(server, client_context(ca), "www.example.com")


def test_clients_without_sni_get_the_default_host(ca: Authority) -> None:
    client = client_context(ca)
    client.check_hostname = False  # no SNI is sent without a server_hostname
    der, _ = handshake(ca.server_context(default_host="api.anthropic.com"), client, None)
    assert "api.anthropic.com" in str(x509.load_der_x509_certificate(der).subject)
    with pytest.raises(ssl.SSLError):
        handshake(ca.server_context(), client, None)
    with pytest.raises(CAError):
        ca.server_context(default_host="www.example.com")


# -- leaves: refusal, cache, rotation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "www.example.com",
        "openai.com",
        "api.openai.com.evil.test",
        "127.0.0.1",
        "::1",
        "*.api.openai.com",
        "",
        "googleapis.com",
        "asia-southeast2-aiplatform.googleapis.com",
        "api_openai.com",
    ],
)
def test_leaf_context_refuses_names_the_ca_may_not_sign(ca: Authority, host: str) -> None:
    assert not ca.permits(host)
    with pytest.raises(CAError, match="not permitted") as info:
        ca.leaf_context(host)
    assert isinstance(info.value, VeilpixError) and isinstance(info.value, veilpix.CAError)


def test_permits_normalises_names(ca: Authority) -> None:
    assert ca.permits("API.OpenAI.com.") and ca.permits("x.eu.api.openai.com")
    assert ca.leaf_context("API.OpenAI.com.") is ca.leaf_context("api.openai.com")


def test_leaves_are_cached_by_host_in_memory_only(ca: Authority) -> None:
    before = sorted(p.name for p in ca.directory.iterdir())
    first = ca.leaf_context("api.openai.com")
    assert ca.leaf_context("api.openai.com") is first  # the cached path: no new key, no signing
    assert ca.leaf_context("api.anthropic.com") is not first
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ca.leaf_context, ["api.mistral.ai"] * 32))
    assert all(g is got[0] for g in got)
    assert sorted(p.name for p in ca.directory.iterdir()) == before  # no leaf key on disk


def test_the_cache_is_an_lru(tmp_path: Path) -> None:
    ca = Authority.init(tmp_path / "ca")
    ca.cache_size = 2
    a = ca.leaf_context("api.openai.com")
    b = ca.leaf_context("api.anthropic.com")
    assert ca.leaf_context("api.openai.com") is a  # a is now the most recent
    ca.leaf_context("api.mistral.ai")  # evicts b
    assert ca.leaf_context("api.openai.com") is a
    assert ca.leaf_context("api.anthropic.com") is not b


def test_rotate_replaces_key_and_certificate_and_forgets_leaves(ca: Authority) -> None:
    old_key, old_cert, old_print = ca.key_path.read_bytes(), ca.cert_pem, ca.fingerprint
    leaf = ca.leaf_context("api.openai.com")
    old_client = client_context(ca)
    ca.rotate()
    assert ca.fingerprint != old_print and ca.cert_path.read_bytes() == ca.cert_pem != old_cert
    key_now = ca.key_path.read_bytes()
    assert key_now != old_key and stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in ca.directory.iterdir()) == ["ca-key.pem", "ca.pem"]
    assert ca.leaf_context("api.openai.com") is not leaf
    assert Authority.load(ca.directory).fingerprint == ca.fingerprint
    with pytest.raises(ssl.SSLCertVerificationError):  # the old trust no longer fits
        handshake(ca.server_context(), old_client, "api.openai.com")
    handshake(ca.server_context(), client_context(ca), "api.openai.com")


def test_rotate_keeps_extra_domains_unless_told(tmp_path: Path) -> None:
    ca = Authority.init(tmp_path / "ca", extra_domains=["gateway.corp.example"])
    ca.rotate()
    assert "gateway.corp.example" in ca.permitted
    ca.rotate(extra_domains=[])
    assert "gateway.corp.example" not in ca.permitted and ca.permitted == vendor_domains()


# -- bundles -----------------------------------------------------------------------------------------


def roots_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    """Point SSL_CERT_FILE (which ssl.get_default_verify_paths reads) at two made-up roots."""
    one, two = self_signed("Root One"), self_signed("Root Two")
    path = tmp_path / "roots.pem"
    path.write_bytes(b"# system roots\n" + one + one + two)  # a duplicate is dropped
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    return one, two


def test_bundle_holds_system_roots_and_the_ca(
    tmp_path: Path, ca: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = roots_file(tmp_path, monkeypatch)
    out = tmp_path / "bundle.pem"
    count, source = write_bundle(out, ca.cert_pem)
    assert count == 2 and source == str(tmp_path / "roots.pem")
    data = out.read_bytes()
    assert one in data and two in data and data.endswith(ca.cert_pem)
    assert data.count(b"-----BEGIN CERTIFICATE-----") == 3
    assert b"PRIVATE KEY" not in data
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    # the bundle works as a trust store for vendor hosts
    handshake(ca.server_context(), ssl.create_default_context(cafile=str(out)), "api.openai.com")


def test_a_bundle_made_from_an_old_bundle_drops_the_old_ca(
    tmp_path: Path, ca: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots_file(tmp_path, monkeypatch)
    bundle = tmp_path / "bundle.pem"
    write_bundle(bundle, ca.cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # after `eval "$(veilpix env)"`
    old = ca.cert_pem
    ca.rotate()
    write_bundle(bundle, ca.cert_pem)
    data = bundle.read_bytes()
    assert old not in data and data.count(b"-----BEGIN CERTIFICATE-----") == 3


def test_no_system_roots_is_a_clear_error(
    tmp_path: Path, ca: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    nothing = ssl.DefaultVerifyPaths(
        None,
        None,
        "SSL_CERT_FILE",
        str(tmp_path / "no.pem"),  # type: ignore[arg-type]
        "SSL_CERT_DIR",
        str(tmp_path / "no"),
    )
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: nothing)
    monkeypatch.setitem(sys.modules, "certifi", None)  # import certifi -> ImportError
    with pytest.raises(CAError, match="no system root certificates") as info:
        write_bundle(tmp_path / "b.pem", ca.cert_pem)
    assert "ca-certificates" in str(info.value) and not (tmp_path / "b.pem").exists()


def test_real_system_roots_are_found() -> None:
    roots, source = read_system_roots()
    assert len(roots) > 10 and source


# -- [intercept] in veilpix.toml ---------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "veilpix.toml"
    path.write_text(text)
    return path


def test_intercept_defaults_and_values(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, ""))
    assert default.intercept.port == 8788 and default.intercept.extra_domains == ()
    assert not default.intercept.only_vendors and default.intercept.upstream_hosts == {}
    (tmp_path / "corp.pem").write_bytes(self_signed("Corp Root"))
    cfg = load_config(
        write(
            tmp_path,
            """\
[intercept]
port = 9001
ca_dir = "ca"
extra_domains = ["Gateway.Corp.Example.", "gateway.corp.example"]
only_vendors = true
upstream_ca = "corp.pem"
upstream_hosts = { "api.openai.com" = "127.0.0.1:9443", "eu.api.openai.com" = "[::1]:9443", "gateway.corp.example" = "Mirror.Corp.Example:443" }
""",
        )
    )
    it = cfg.intercept
    assert it.port == 9001 and it.only_vendors
    assert it.ca_dir == tmp_path / "ca" and it.upstream_ca == tmp_path / "corp.pem"
    assert it.extra_domains == ("gateway.corp.example",)
    assert it.upstream_hosts == {
        "api.openai.com": ("127.0.0.1", 9443),
        "eu.api.openai.com": ("::1", 9443),
        "gateway.corp.example": ("mirror.corp.example", 443),
    }


def test_ca_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write(tmp_path, '[intercept]\nca_dir = "from-config"\n'))
    assert cfg.ca_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cfg.ca_dir() == tmp_path / "default-ca"  # $VEILPIX_CA_DIR (set by the fixture)
    monkeypatch.delenv("VEILPIX_CA_DIR")
    assert cfg.ca_dir() == tmp_path / "from-config"
    default = load_config(write(tmp_path, "")).ca_dir()
    assert default.parts[-2:] == ("veilpix", "ca") and str(tmp_path) in str(default)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[intercept]\nprot = 1\n", "unknown setting intercept.prot"),
        ("[intercept]\nport = '8788'\n", "intercept.port must be a int"),
        ("[intercept]\nport = 70000\n", "intercept.port must be from 0 to 65535"),
        ("[intercept]\nport = true\n", "intercept.port must be a number"),
        ("[intercept]\nonly_vendors = 'yes'\n", "intercept.only_vendors must be a bool"),
        (
            "[intercept]\nextra_domains = 'a.example.com'\n",
            "intercept.extra_domains must be a list",
        ),
        ("[intercept]\nextra_domains = [1]\n", "must hold strings"),
        ("[intercept]\nextra_domains = ['*.example.com']\n", "is a pattern"),
        ("[intercept]\nextra_domains = ['.example.com']\n", "is a pattern"),
        ("[intercept]\nextra_domains = ['10.0.0.1']\n", "is an IP address"),
        ("[intercept]\nextra_domains = ['[::1]']\n", "is an IP address"),
        ("[intercept]\nextra_domains = ['com']\n", "too broad"),
        ("[intercept]\nextra_domains = ['co.uk']\n", "too broad"),
        ("[intercept]\nextra_domains = ['googleapis.com']\n", "too broad"),
        ("[intercept]\nextra_domains = ['azure.com']\n", "too broad"),
        ("[intercept]\nextra_domains = ['bad_name.example.com']\n", "is not a DNS name"),
        ("[intercept]\nextra_domains = ['a..example.com']\n", "is not a DNS name"),
        ("[intercept]\nextra_domains = ['-a.example.com']\n", "is not a DNS name"),
        ("[intercept]\nupstream_hosts = { 'api.openai.com' = '127.0.0.1' }\n", '"host:port"'),
        ("[intercept]\nupstream_hosts = { 'api.openai.com' = '127.0.0.1:0' }\n", "from 1 to 65535"),
        ("[intercept]\nupstream_hosts = { 'api.openai.com' = 'h:99999' }\n", "from 1 to 65535"),
        ("[intercept]\nupstream_hosts = { 'api.openai.com' = '[nope]:1' }\n", '"host:port"'),
        ("[intercept]\nupstream_hosts = { 'api.openai.com' = 'a b:1' }\n", '"host:port"'),
        ("[intercept]\nupstream_hosts = { 'api.openai.com' = 443 }\n", '"host:port" string'),
        ("[intercept]\nupstream_hosts = { 'www.example.com' = 'h:1' }\n", "never intercepts it"),
        ("[intercept]\nupstream_hosts = { '*.openai.com' = 'h:1' }\n", "is a pattern"),
        ("[intercept]\nupstream_ca = 'missing.pem'\n", "cannot read"),
        ("[intercept]\nupstream_ca = 'veilpix.toml'\n", "holds no PEM certificate"),
    ],
)
def test_intercept_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)


# -- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["ca", "--help"],
        ["ca", "init", "--help"],
        ["ca", "rotate", "--help"],
        ["ca", "path", "--help"],
        ["ca", "bundle", "--help"],
        ["env", "--help"],
    ],
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr().out
    assert exc.value.code == 0 and f"usage: veilpix {' '.join(argv[:-1])}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ca", "init", "--extra-domain", "*.example.com"], "is a pattern"),
        (["ca", "init", "--extra-domain", "com"], "too broad"),
        (["ca", "bundle"], "the following arguments are required: -o/--output"),
        (["ca", "frob"], "invalid choice: 'frob'"),
        (["env", "--proxy", "https://127.0.0.1:8788"], "expected the proxy as http://HOST:PORT"),
        (["env", "--proxy", "http://127.0.0.1"], "expected the proxy as http://HOST:PORT"),
        (["ca", "path", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_ca_without_action_and_without_a_ca(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ca")
    assert code == 2 and "usage: veilpix ca" in err
    for argv in (["ca", "path"], ["ca", "bundle", "-o", "x.pem"], ["env"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "no veilpix CA in" in err and "veilpix ca init" in err
    code, _, err = run(capsys, "ca", "rotate")
    assert code == 2 and "no veilpix CA" in err and "to rotate" in err


def test_cli_init_path_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "default-ca"  # $VEILPIX_CA_DIR
    code, out, _ = run(capsys, "ca", "init", "--extra-domain", "gateway.corp.example")
    assert code == 0 and f"veilpix CA created in {folder}" in out
    assert "extra domains: gateway.corp.example" in out and "SHA-256:" in out
    assert stat.S_IMODE((folder / "ca-key.pem").stat().st_mode) == 0o600
    code, _, err = run(capsys, "ca", "init")
    assert code == 2 and "already exists" in err
    code, out, _ = run(capsys, "ca", "path")
    assert code == 0 and out == f"{folder / 'ca.pem'}\n"
    code, out, _ = run(capsys, "ca", "path", "--json")
    doc = json.loads(out)
    assert doc["cert"] == str(folder / "ca.pem") and doc["key"] == str(folder / "ca-key.pem")
    assert "gateway.corp.example" in doc["permitted"] and doc["missing"] == []
    assert doc["excluded"] == ["0.0.0.0/0", "::/0"]
    assert doc["uncovered_patterns"] == ["*-aiplatform.googleapis.com"]
    code, out, _ = run(capsys, "ca", "rotate", "--json")
    rotated = json.loads(out)
    assert code == 0 and rotated["fingerprint_sha256"] != doc["fingerprint_sha256"]
    assert "gateway.corp.example" not in rotated["permitted"]  # not in the config, not given
    code, out, _ = run(capsys, "ca", "rotate")
    assert code == 0 and "veilpix CA replaced" in out and "trust the new certificate" in out


def test_cli_dir_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(
        tmp_path, '[intercept]\nca_dir = "cfg-ca"\nextra_domains = ["gateway.corp.example"]\n'
    )
    code, out, _ = run(capsys, "ca", "init", "--config", str(cfg), "--json")
    assert code == 0  # $VEILPIX_CA_DIR wins over the config
    assert json.loads(out)["dir"] == str(tmp_path / "default-ca")
    code, out, _ = run(capsys, "ca", "init", "--dir", str(tmp_path / "d"), "--json")
    assert code == 0 and json.loads(out)["dir"] == str(tmp_path / "d")
    # a CA made before the config named an extra domain: path says what it lacks
    code, out, err = run(capsys, "ca", "path", "--dir", str(tmp_path / "d"), "--config", str(cfg))
    assert code == 0 and "does not cover gateway.corp.example" in err and "ca rotate" in err


def test_cli_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots_file(tmp_path, monkeypatch)
    assert run(capsys, "ca", "init")[0] == 0
    out_file = tmp_path / "out" / "roots.pem"
    out_file.parent.mkdir()
    code, out, _ = run(capsys, "ca", "bundle", "-o", str(out_file))
    assert code == 0 and "2 system roots" in out and "export SSL_CERT_FILE=" in out
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o644
    code, out, _ = run(capsys, "ca", "bundle", "-o", str(out_file), "--json")
    doc = json.loads(out)
    assert doc["system_roots"] == 2 and doc["path"] == str(out_file)
    code, _, err = run(capsys, "ca", "bundle", "-o", str(tmp_path / "default-ca" / "ca-key.pem"))
    assert code == 2 and "refusing to overwrite the CA key" in err
    assert b"PRIVATE KEY" in (tmp_path / "default-ca" / "ca-key.pem").read_bytes()


def test_cli_bundle_to_stdout(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots_file(tmp_path, monkeypatch)
    assert main(["ca", "init", "--json"]) == 0
    capfdbinary.readouterr()
    assert main(["ca", "bundle", "-o", "-"]) == 0
    out, err = capfdbinary.readouterr()
    assert out.count(b"-----BEGIN CERTIFICATE-----") == 3 and b"2 system roots" in err


def test_env_lines_are_copy_pasteable_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots_file(tmp_path, monkeypatch)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    folder = tmp_path / "it's a folder"  # a space and a quote: quoting must hold
    assert run(capsys, "ca", "init", "--dir", str(folder))[0] == 0
    code, out, _ = run(capsys, "env", "--dir", str(folder))
    assert code == 0
    lines = out.splitlines()
    assert [shlex.split(line)[0] for line in lines] == ["export"] * 7
    values = dict(shlex.split(line)[1].split("=", 1) for line in lines)
    assert values == {
        "HTTPS_PROXY": "http://127.0.0.1:8788",
        "https_proxy": "http://127.0.0.1:8788",
        "SSL_CERT_FILE": str(folder / "bundle.pem"),
        "REQUESTS_CA_BUNDLE": str(folder / "bundle.pem"),
        "CURL_CA_BUNDLE": str(folder / "bundle.pem"),
        "NODE_EXTRA_CA_CERTS": str(folder / "ca.pem"),
        "NODE_USE_ENV_PROXY": "1",
    }
    assert (folder / "bundle.pem").read_bytes().endswith((folder / "ca.pem").read_bytes())
    # a real shell agrees
    sh = shutil.which("sh")
    if sh is not None:
        script = out + 'printf "%s\\n" "$SSL_CERT_FILE" "$NODE_EXTRA_CA_CERTS" "$HTTPS_PROXY"\n'
        done = subprocess.run(
            [sh],
            input=script,
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ.get("PATH", "")},
        )
        assert done.stdout.splitlines() == [
            str(folder / "bundle.pem"),
            str(folder / "ca.pem"),
            "http://127.0.0.1:8788",
        ]
    code, out, _ = run(
        capsys, "env", "--dir", str(folder), "--json", "--proxy", "http://[::1]:9000/"
    )
    assert code == 0 and json.loads(out)["HTTPS_PROXY"] == "http://[::1]:9000"
    code, out, _ = run(capsys, "env", "--unset")
    assert code == 0 and shlex.split(out) == ["unset", *values]


def test_env_takes_vendor_hosts_out_of_no_proxy_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots_file(tmp_path, monkeypatch)
    assert run(capsys, "ca", "init")[0] == 0
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.openai.com,*.corp.example,res.example")
    monkeypatch.setenv("no_proxy", "*")
    cfg = write(tmp_path, '[vendors.openai]\nbase_url = "https://res.example/openai/v1"\n')
    code, out, err = run(capsys, "env", "--config", str(cfg))
    assert code == 0
    assert "export NO_PROXY='localhost,127.0.0.1,*.corp.example'" in out.splitlines()
    assert "unset no_proxy" in out.splitlines()
    assert "removed .openai.com, res.example" in err and "removed *;" in err
    # what the shell then has: Python's own proxy logic no longer skips the vendor
    sh = shutil.which("sh")
    if sh is not None:
        script = out + 'printf "%s|%s\\n" "$NO_PROXY" "${no_proxy-unset}"\n'
        done = subprocess.run(
            [sh],
            input=script,
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ.get("PATH", ""), "no_proxy": "*"},
        )
        assert done.stdout.strip() == "localhost,127.0.0.1,*.corp.example|unset"
    import urllib.request

    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,*.corp.example")
    monkeypatch.delenv("no_proxy")
    assert not urllib.request.proxy_bypass_environment("api.openai.com")
    assert urllib.request.proxy_bypass_environment("localhost")
    code, out, _ = run(capsys, "env", "--json")
    assert code == 0 and "NO_PROXY" not in json.loads(out)  # nothing to take out: untouched
    monkeypatch.setenv("NO_PROXY", "googleapis.com,intranet")
    code, out, err = run(capsys, "env", "--json")
    assert json.loads(out)["NO_PROXY"] == "intranet" and "googleapis.com" in err


@pytest.mark.parametrize(
    ("entry", "bypasses"),
    [
        ("*", True),
        (".openai.com", True),
        ("openai.com", True),
        ("OPENAI.COM:443", True),
        ("*.anthropic.com", True),
        ("com", True),
        ("googleapis.com", True),  # Gemini, and every Vertex region host
        ("europe-west4-aiplatform.googleapis.com", True),
        ("openai.azure.com", True),  # every Azure resource
        ("azure.com", True),
        ("localhost", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("[::1]:8788", False),
        ("10.0.0.0/8", False),
        ("intranet.corp", False),
        ("openai.com.evil", False),
        ("notopenai.com", False),
        ("", False),
        (".", True),  # no name at all: taken out
        # found by review: shapes some client reads as a vendor host
        ("https://api.openai.com", True),  # httpx: scheme and host
        ("all://*openai.com", True),
        ("api.openai.com/", True),
        ("..openai.com", True),  # urllib and requests drop every leading dot
        ("*ai.com", True),  # proxy-from-env: "ends with ai.com"
        ("*nai.com", True),
        ("fal.run:443", True),
        ("foo$(id)", True),  # no plain name: kept by no rule
        ("xn--bcher-kva.example", False),
        ("a_b.corp", False),
    ],
)
def test_no_proxy_entries_that_bypass_a_vendor(entry: str, bypasses: bool) -> None:
    from veilpix._net import no_proxy_split

    kept, removed = no_proxy_split(entry)
    assert removed == ([entry] if bypasses else [])
    assert kept == ([entry] if entry and not bypasses else [])


def test_no_proxy_entries_split_on_white_space_too() -> None:
    from veilpix._net import no_proxy_split

    # curl, undici and proxy-from-env split on spaces; requests removes them
    assert no_proxy_split("localhost api.openai.com\tintranet") == (
        ["localhost", "intranet"],
        ["api.openai.com"],
    )


def test_env_reads_every_spelling_of_no_proxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots_file(tmp_path, monkeypatch)
    assert run(capsys, "ca", "init")[0] == 0
    for name in list(os.environ):
        if name.lower() in ("no_proxy", "npm_config_no_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("No_Proxy", "*")
    monkeypatch.setenv("npm_config_no_proxy", "localhost,.anthropic.com")
    code, out, err = run(capsys, "env")
    assert code == 0
    lines = out.splitlines()
    assert "unset No_Proxy" in lines and "export npm_config_no_proxy=localhost" in lines
    assert "No_Proxy" in err and ".anthropic.com" in err


def test_env_takes_the_port_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots_file(tmp_path, monkeypatch)
    assert run(capsys, "ca", "init")[0] == 0
    cfg = write(tmp_path, "[intercept]\nport = 9123\n")
    code, out, _ = run(capsys, "env", "--config", str(cfg), "--json")
    assert code == 0 and json.loads(out)["HTTPS_PROXY"] == "http://127.0.0.1:9123"
    cfg = write(tmp_path, "[intercept]\nport = 0\n")
    code, _, err = run(capsys, "env", "--config", str(cfg))
    assert code == 2 and "--proxy" in err


def test_config_check_shows_intercept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(
        tmp_path,
        """\
[intercept]
port = 9001
extra_domains = ["gateway.corp.example"]
upstream_hosts = { "api.openai.com" = "[::1]:9443" }
""",
    )
    code, out, _ = run(capsys, "config", "check", "--config", str(cfg))
    assert code == 0
    assert "intercept: port 9001, ca_dir " in out and "extra_domains gateway.corp.example" in out
    assert "api.openai.com via [::1]:9443" in out
    code, out, _ = run(capsys, "config", "check", "--config", str(cfg), "--json")
    doc = json.loads(out)["intercept"]
    assert doc["port"] == 9001 and doc["only_vendors"] is False
    assert doc["upstream_hosts"] == {"api.openai.com": "[::1]:9443"}
    assert doc["ca_dir"] == str(tmp_path / "default-ca")


def test_public_names() -> None:
    assert veilpix.Authority is Authority and issubclass(veilpix.CAError, veilpix.VeilpixError)
