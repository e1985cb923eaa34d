"""The local certificate authority of the intercept proxy (``veilpix ca``, docs/intercept.md).

An app that can only be given ``HTTPS_PROXY`` sends its vendor calls through veilpix inside
TLS; to sanitize them the proxy must terminate that TLS with a certificate the app trusts.
This module makes that certificate authority and, on demand, the per-host leaf certificates.

The CA is built so that trusting it costs as little as possible:

- X.509 Name Constraints (critical) permit only the DNS subtrees of the registered vendor
  hosts (from :mod:`veilpix.adapters`) plus the configured ``[intercept] extra_domains``, and
  exclude every IP address. Verifiers that honour constraints on trust anchors (OpenSSL, and
  with it Python, Node.js and curl; Go; NSS; Chrome) reject anything else it might sign.
- ``basicConstraints CA:true, pathlen:0``: it signs leaves only, never another CA. Its
  extended key usage is ``serverAuth``, for verifiers that chain usages.
- ECDSA P-256 throughout. The CA key sits in a 0600 file (with its certificate) in a 0700
  folder; leaf keys live only in memory, each host its own, and are never written anywhere.

A DNS constraint permits a name and everything below it, so a broad parent would give the CA
power over unrelated services. Vendor host patterns become subtrees only when that is exact:
plain hosts (``api.openai.com``) and ``*.zone`` patterns whose zone is at least three labels
deep and belongs to the vendor's product (``*.openai.azure.com`` -> ``openai.azure.com``).
Patterns no subtree can express (``*-aiplatform.googleapis.com``) are left to the concrete
hosts the adapters list; :func:`uncovered_patterns` names them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veilpix._atomic import write_file
from veilpix._errors import CAError
from veilpix._net import (
    covered,
    is_dns_name,
    permitted_domains,
    uncovered_patterns,
    vendor_domains,
)

__all__ = [
    "BUNDLE_NAME",
    "CERT_NAME",
    "KEY_NAME",
    "Authority",
    "covered",
    "permitted_domains",
    "read_system_roots",
    "uncovered_patterns",
    "vendor_domains",
    "write_bundle",
]

CERT_NAME = "ca.pem"  # the CA certificate (public, 0644): what apps are told to trust
KEY_NAME = "ca-key.pem"  # the CA private key and its certificate (0600): the source of truth
BUNDLE_NAME = "bundle.pem"  # system roots + the CA, refreshed by `veilpix env`

CA_DAYS = 3650
LEAF_DAYS = 30
BACKDATE = dt.timedelta(days=1)  # tolerate clients whose clocks run a little behind
RENEW_BEFORE = dt.timedelta(days=1)  # a cached leaf is replaced a day before it expires
_ORG = "veilpix"
_UNIT = "intercept CA (name-constrained, local)"
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL)


def _host(host: str) -> str | None:
    """``host`` normalised as a DNS name (lower case, no trailing dot), or None for anything
    else (IP literals, patterns, junk)."""
    name = host.lower().removesuffix(".")
    return name if is_dns_name(name) else None


# -- key and certificate files ----------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _make_ca(
    key: ec.EllipticCurvePrivateKey, domains: tuple[str, ...], days: int
) -> x509.Certificate:
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"veilpix intercept CA {ski.digest[:4].hex()}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _UNIT),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        ]
    )

    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(d) for d in domains],
        excluded_subtrees=[
            x509.IPAddress(ipaddress.IPv4Network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.IPv6Network("::/0")),
        ],
    )
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(constraints, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _is_veilpix_ca(der: bytes) -> bool:
    """Whether a DER certificate is a veilpix intercept CA (by its organisational unit, which
    no public root carries; cheaper and sturdier than parsing every system root)."""
    return _UNIT.encode() in der and _ORG.encode() in der


def _load_context_chain(
    context: ssl.SSLContext, cert_pem: bytes, key: ec.EllipticCurvePrivateKey
) -> None:
    """``context.load_cert_chain`` from memory. The ssl module only reads files, so each PEM
    goes through a pipe opened as ``/dev/fd/N``: the key passes the kernel, never a disk."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fds: list[int] = []
    try:
        paths = []
        for data in (cert_pem, key_pem):
            read, write = os.pipe()
            fds.append(read)
            try:
                os.set_blocking(write, False)  # a few hundred bytes; never waits on a reader
                os.write(write, data)
            finally:
                os.close(write)
            paths.append(f"/dev/fd/{read}")
        context.load_cert_chain(paths[0], paths[1])
    except (OSError, ssl.SSLError) as exc:
        raise CAError(
            f"could not load a certificate into TLS: {exc}",
            hint="veilpix needs a POSIX system with /dev/fd (Linux, macOS)",
        ) from exc
    finally:
        for fd in fds:
            os.close(fd)


# -- system roots and bundles -----------------------------------------------------------------


def _pem_blocks(data: bytes) -> list[bytes]:
    return [m.group(0) for m in _PEM_CERT.finditer(data)]


def read_system_roots() -> tuple[tuple[bytes, ...], str]:
    """The system's trusted root certificates as PEM blocks, and where they came from: the
    ``ssl.get_default_verify_paths()`` cafile, else its capath folder, else certifi's bundle,
    whichever exists first and holds certificates. A veilpix intercept CA found there (a
    previous bundle named by ``$SSL_CERT_FILE``) is left out. :class:`CAError` when none."""
    paths = ssl.get_default_verify_paths()
    candidates: list[tuple[str, list[Path]]] = []
    if paths.cafile:
        candidates.append((paths.cafile, [Path(paths.cafile)]))
    if paths.capath and Path(paths.capath).is_dir():
        folder = Path(paths.capath)
        candidates.append((str(folder), sorted(p for p in folder.iterdir() if p.is_file())))
    try:
        import certifi
    except ImportError:
        pass
    else:
        candidates.append((certifi.where(), [Path(certifi.where())]))
    for source, files in candidates:
        seen: set[bytes] = set()
        blocks: list[bytes] = []
        for file in files:
            try:
                data = file.read_bytes()
            except OSError:
                continue
            for block in _pem_blocks(data):
                body = b"".join(block.splitlines()[1:-1])
                try:
                    der = base64.b64decode(body, validate=True)
                except ValueError:
                    continue
                if der in seen or _is_veilpix_ca(der):
                    continue
                seen.add(der)
                blocks.append(ssl.DER_cert_to_PEM_cert(der).encode())
        if blocks:
            return tuple(blocks), source
    tried = ", ".join(s for s, _ in candidates) or "no cafile, capath or certifi"
    raise CAError(
        f"found no system root certificates to put in the bundle (looked at: {tried})",
        hint="install the system's CA certificates (Debian: apt install ca-certificates) or "
        "certifi (pip install certifi), or set SSL_CERT_FILE to a PEM bundle of roots",
    )


def write_bundle(path: str | os.PathLike[str], ca_pem: bytes) -> tuple[int, str]:
    """Write the system roots plus ``ca_pem`` to ``path`` (0644, atomically) for
    ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``, which replace the default roots rather than
    add to them. Returns the number of system roots and where they came from."""
    roots, source = read_system_roots()
    cert = x509.load_pem_x509_certificate(ca_pem)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    text = b"".join(
        [
            f"# veilpix trust bundle: {len(roots)} system root certificates (from {source})\n"
            "# and the veilpix intercept CA. Regenerate with `veilpix ca bundle -o FILE`.\n".encode(),
            *roots,
            f"# veilpix intercept CA, SHA-256 {fingerprint}\n".encode(),
            ca_pem,
        ]
    )
    write_file(Path(path), text, mode=0o644)
    return len(roots), source


# -- the authority ----------------------------------------------------------------------------


class Authority:
    """The intercept CA kept in ``directory``: :meth:`init` creates it, :meth:`load` opens it.

    :meth:`leaf_context` gives a server-side ``ssl.SSLContext`` for one permitted host (a
    fresh ECDSA P-256 key and a 30-day certificate, made on first use and kept in an LRU of
    ``cache_size`` hosts); :meth:`server_context` gives one context that picks the leaf from
    the client's SNI. Thread-safe.
    """

    def __init__(
        self,
        directory: Path,
        key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        *,
        cache_size: int = 256,
    ) -> None:
        self.directory = directory
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[ssl.SSLContext, float]] = OrderedDict()
        self._generation = 0  # bumped by each new key: leaves made with an old one are dropped
        self._install(key, certificate)

    def _install(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints)
        permitted = tuple(
            str(n.value)
            for n in constraints.value.permitted_subtrees or ()
            if isinstance(n, x509.DNSName)
        )
        with self._lock:
            self._key = key
            self._certificate = certificate
            self._permitted = permitted
            self._cache.clear()
            self._generation += 1

    # -- files

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT_NAME

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_NAME

    @property
    def bundle_path(self) -> Path:
        return self.directory / BUNDLE_NAME

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        *,
        extra_domains: Iterable[str] = (),
        replace: bool = False,
        days: int = CA_DAYS,
    ) -> Authority:
        """Create a CA in ``directory`` (made 0700) permitted for the vendors' domains and
        ``extra_domains``. An existing CA is a :class:`CAError` unless ``replace`` (then the
        old key and certificate are overwritten: see :meth:`rotate`)."""
        folder = Path(directory).expanduser()
        domains = permitted_domains(extra_domains)
        key = _new_key()
        cert = _make_ca(key, domains, days)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file(folder / KEY_NAME, key_pem + cert_pem, replace=replace)
        except FileExistsError:
            raise CAError(
                f"a veilpix CA already exists in {str(folder)!r}",
                hint="use it as it is, or replace it with `veilpix ca rotate`, after which "
                "apps must trust the new certificate",
            ) from None
        except OSError as exc:
            raise CAError(
                f"cannot write the CA in {str(folder)!r}: {exc.strerror}",
                hint="choose a writable folder with --dir or $VEILPIX_CA_DIR",
            ) from exc
        write_file(folder / CERT_NAME, cert_pem, mode=0o644)
        authority = cls(folder, key, cert)
        if replace and authority.bundle_path.exists():
            write_bundle(authority.bundle_path, cert_pem)
        return authority

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, cache_size: int = 256) -> Authority:
        """Open the CA in ``directory``. :class:`CAError` when it is missing, damaged, or its
        key file can be read by other users."""
        folder = Path(directory).expanduser()
        path = folder / KEY_NAME
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except FileNotFoundError:
            raise CAError(f"no veilpix CA in {str(folder)!r}") from None
        except OSError as exc:
            raise CAError(f"cannot read the CA key {str(path)!r}: {exc.strerror}") from exc
        if mode & 0o077:
            raise CAError(
                f"the CA key {str(path)!r} is readable by other users (mode {mode & 0o777:o})",
                hint=f"chmod 600 {path}, and run `veilpix ca rotate` if others could have "
                "copied it",
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
            blocks = _pem_blocks(data)
            cert = x509.load_pem_x509_certificate(blocks[0])
            cert.extensions.get_extension_for_class(x509.NameConstraints)
        except (ValueError, TypeError, IndexError, x509.ExtensionNotFound) as exc:
            raise CAError(
                f"the CA key file {str(path)!r} is damaged: {exc}",
                hint="replace the CA with `veilpix ca rotate`",
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
            cert.public_key()
        ):
            raise CAError(
                f"the key in {str(path)!r} does not belong to its certificate",
                hint="replace the CA with `veilpix ca rotate`",
            )
        authority = cls(folder, key, cert, cache_size=cache_size)
        pem = authority.cert_pem
        try:
            current = authority.cert_path.read_bytes()
        except OSError:
            current = b""
        if current != pem:  # the public copy went missing or is stale: it is derived data
            write_file(authority.cert_path, pem, mode=0o644)
        return authority

    def rotate(self, *, extra_domains: Iterable[str] | None = None) -> None:
        """Replace the key and certificate with new ones (the old key file is overwritten),
        forget every cached leaf, and refresh ``bundle.pem`` if there is one. The permitted
        names are recomputed from the adapters plus ``extra_domains`` (None: the extra names
        the current CA has). Apps must then trust the new certificate."""
        if extra_domains is None:
            vendor = vendor_domains()
            extra_domains = [d for d in self.permitted if not covered(d, vendor)]
        fresh = Authority.init(self.directory, extra_domains=extra_domains, replace=True)
        self._install(fresh._key, fresh._certificate)

    # -- facts

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def cert_pem(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, as ``openssl x509 -fingerprint -sha256`` prints it."""
        return self._certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def permitted(self) -> tuple[str, ...]:
        """The DNS subtrees the CA's name constraints permit."""
        return self._permitted

    def missing(self, extra_domains: Iterable[str] = ()) -> tuple[str, ...]:
        """Names the adapters (and ``extra_domains``) need that this CA was not made for: a
        newer veilpix knows more vendor hosts, or the configuration added extra domains.
        ``veilpix ca rotate`` makes a CA that covers them."""
        return tuple(d for d in permitted_domains(extra_domains) if not self.permits(d))

    def permits(self, host: str) -> bool:
        """Whether the CA may sign for ``host`` (a DNS name; IP addresses never)."""
        name = _host(host)
        return name is not None and covered(name, self._permitted)

    # -- leaves

    def _make_leaf(self, host: str) -> tuple[ssl.SSLContext, float]:
        key = _new_key()
        ca = self._certificate
        now = _now()
        not_before = max(now - BACKDATE, ca.not_valid_before_utc)
        not_after = min(now + dt.timedelta(days=LEAF_DAYS), ca.not_valid_after_utc)
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "veilpix intercept")]
        if len(host) <= 64:  # the X.520 upper bound of a common name
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(self._key, hashes.SHA256())
        )
        context = _server_base()
        _load_context_chain(context, cert.public_bytes(serialization.Encoding.PEM), key)
        return context, (not_after - RENEW_BEFORE).timestamp()

    def leaf_context(self, host: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate for ``host`` (ALPN http/1.1).
        The same object is returned for a host while it is cached. :class:`CAError` when the
        CA's name constraints do not permit ``host``."""
        name = _host(host)
        if name is None or not covered(name, self._permitted):
            raise CAError(
                f"the veilpix CA is not permitted to sign for {host!r}",
                hint="it signs only for the vendors' hosts and [intercept] extra_domains; "
                "after adding a domain run `veilpix ca rotate`",
            )
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[1] > time.time():
                self._cache.move_to_end(name)
                return hit[0]
            generation = self._generation
        made = self._make_leaf(name)  # outside the lock: other hosts are not held up
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[1] > time.time():  # another thread was quicker
                self._cache.move_to_end(name)
                return hit[0]
            if generation == self._generation:  # not rotated meanwhile
                self._cache[name] = made
                self._cache.move_to_end(name)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return made[0]

    def server_context(
        self,
        default_host: str | None = None,
        *,
        on_refuse: Callable[[str | None], None] | None = None,
    ) -> ssl.SSLContext:
        """A server-side TLS context whose SNI callback swaps in :meth:`leaf_context` for the
        name the client asks for. Clients that send no SNI get ``default_host``'s certificate
        (or a handshake failure without one); names the CA may not sign for are refused with
        an ``unrecognized_name`` alert, after calling ``on_refuse(name)``."""
        if default_host is not None:
            self.leaf_context(default_host)  # refuses a host the CA may not sign for
        context = _server_base()

        def pick(
            sock: ssl.SSLSocket | ssl.SSLObject, name: str | None, _: ssl.SSLContext
        ) -> int | None:
            wanted = name if name is not None else default_host
            if wanted is not None and self.permits(wanted):
                try:
                    sock.context = self.leaf_context(wanted)
                except Exception:  # noqa: BLE001 - an exception here would only be printed
                    return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
                return None
            if on_refuse is not None:
                with contextlib.suppress(Exception):  # the refusal stands either way
                    on_refuse(name)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

        context.sni_callback = pick
        return context


def _server_base() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context
