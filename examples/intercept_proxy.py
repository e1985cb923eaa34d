"""Route an app that takes no base URL through veilpix as its HTTPS_PROXY, offline.

    python examples/intercept_proxy.py [FOLDER]

`veilpix proxy --intercept` is an HTTP CONNECT proxy. For AI vendors' hosts it opens the
TLS with a certificate from a local CA that can sign only for those hosts (X.509 name
constraints), runs every request through the same core as the gateway (sanitize, policy,
log first) and sends it on over verified TLS; other hosts are tunnelled untouched. The app
changes nothing but its environment (eval "$(veilpix env)").

This script runs everything on loopback, with no network and no API key:

1. the veilpix CA in FOLDER/ca (what `veilpix ca init` makes), and the names it may sign;
2. a stand-in for https://api.openai.com: TLS with a certificate from a throwaway "public"
   root, on 127.0.0.1, reached through [intercept] upstream_hosts and trusted through
   [intercept] upstream_ca (for tests and air-gapped set-ups; normally the real host);
3. the intercept proxy and the gateway, built from that veilpix.toml as `veilpix proxy
   --intercept` builds them, in this process;
4. the official openai SDK with its default base URL (https://api.openai.com/v1), an httpx
   client using the proxy and trusting the veilpix CA: the photo arrives without GPS;
5. the transfer log (door: intercept).

It builds on examples/proxy_gateway.py (the photo, the stand-in, the loopback server).
Needs the 'proxy' extra (uvicorn) and openai. Exit code 0 when everything went as shown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from proxy_gateway import FakeOpenAI, Loopback, describe, sample_jpeg

import veilpix
from veilpix.proxy import build_gateway
from veilpix.proxy._serve import intercept_upstream, start_intercept

HOST = "api.openai.com"


def stand_in_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """(root.pem, cert.pem, key.pem): a throwaway root, and a certificate for HOST it signed,
    playing the vendor's public PKI. Nothing to do with the veilpix CA."""

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def build(subject: str, public: Any, issuer: str, *extensions: Any) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(root_key, hashes.SHA256())

    # The key identifiers and key usage that Python 3.13's strict X.509 checks ask for.
    root_id = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = build(
        "example vendor root",
        root_key.public_key(),
        "example vendor root",
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (root_id, False),
        (
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
            True,
        ),
    )
    cert = build(
        HOST,
        key.public_key(),
        "example vendor root",
        (x509.SubjectAlternativeName([x509.DNSName(HOST)]), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_id), False),
    )
    paths = folder / "vendor-root.pem", folder / "vendor-cert.pem", folder / "vendor-key.pem"
    paths[0].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class EventLoopThread:
    """An asyncio loop in a thread, for the proxy, while this script's client blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="veilpix-intercept-"))
    out.mkdir(parents=True, exist_ok=True)
    authority = veilpix.Authority.init(out / "ca", replace=True)
    print(f"the veilpix CA: {authority.cert_path}")
    print(
        f"  it may sign for {len(authority.permitted)} names, e.g. "
        f"{', '.join(sorted(authority.permitted)[:4])}, ...\n"
    )
    root, cert, key = stand_in_certificate(out)
    photo = sample_jpeg()
    print(f"the photo: {describe(photo)}\n")

    fake = FakeOpenAI()
    vendor = Loopback(fake)
    vendor.server.config.ssl_certfile, vendor.server.config.ssl_keyfile = str(cert), str(key)
    with vendor:
        port = vendor.url.rsplit(":", 1)[1]
        config_file = out / "veilpix.toml"
        config_file.write_text(
            f'[log]\npath = "audit.db"\n\n[intercept]\nca_dir = "ca"\n'
            f'upstream_ca = "{root.name}"                # trusted besides the system roots\n'
            f'upstream_hosts = {{ "{HOST}" = "127.0.0.1:{port}" }}   # dial the stand-in\n'
        )
        print(
            f"{config_file}:\n"
            + "".join(f"  {line}\n" for line in config_file.read_text().splitlines())
        )
        config = veilpix.load_config(config_file)
        gateway = build_gateway(
            config, log_path=out / "audit.db", upstream=intercept_upstream(config)
        )
        log = gateway.guards[""].log
        loop = EventLoopThread()
        try:
            proxy = loop.run(start_intercept(config, gateway, port=0, authority=authority))
            print(f"intercept proxy on {proxy.url}: HTTPS_PROXY={proxy.url}\n")
            http = httpx.Client(proxy=proxy.url, verify=str(authority.cert_path), timeout=30)
            client = openai.OpenAI(api_key="sk-offline-example", http_client=http)
            print(f"openai SDK, base URL {client.base_url} (unchanged), images.edit:")
            result = client.images.edit(
                model="gpt-image-1",
                prompt="add a red hat",
                image=("photo.jpg", photo, "image/jpeg"),
            )
            print(f"  the app got {len(result.data)} image(s) back\n")
            http.close()
            print(f"proxy counters: {proxy.stats}")
            loop.run(proxy.aclose())
            loop.run(gateway.aclose())
        finally:
            loop.stop()
            log.close()
    print(f"\nthe transfer log, {log.path}:")
    with veilpix.AuditLog(log.path, readonly=True) as read:
        for rec in read.records():
            d = rec.to_dict()
            print(
                f"  {rec.id[:8]}  {rec.outcome:<6} door={d['who']['door']}  "
                f"{d['where']['method']} {d['where']['url']}  HTTP {d['status']}"
            )
    ok = fake.received == 1 and veilpix.verify_log(log.path).ok
    print("\nOK" if ok else "\nsomething did not go as shown")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
