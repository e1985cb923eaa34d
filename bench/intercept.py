"""Benchmark: the intercept proxy (``veilpix proxy --intercept``) against the same TLS upstream
reached directly, through the same proxy's blind tunnel, through the gateway, and through
mitmproxy in regular (``HTTPS_PROXY``) mode, same run.

Setup
-----
Local processes on 127.0.0.1, started by this script and stopped at the end:

* upstream   the stand-in vendor of ``bench/proxy.py`` (reads the body, answers a ~230 B
             JSON) on uvicorn with TLS: an ECDSA certificate for api.openai.com, *.api.openai.com
             and 127.0.0.1 from a throwaway CA made here.
* intercept  ``InterceptProxy(Gateway({"": Guard(Policy(), AuditLog)}, upstream=UpstreamPool(
             resolve={api.openai.com: upstream}, extra_ca=test CA)), Authority)`` on its own
             asyncio loop: ``[intercept] upstream_hosts`` / ``upstream_ca`` as a user would set
             them. Every intercepted call is sanitized, checked and logged (two durable
             commits). Hosts that are not vendors' go through its byte tunnel.
* gateway    the same Gateway (same guard, log folder, upstream pool) on uvicorn, reached by
             base URL: the other door to the same core, so intercept minus gateway is what
             terminating the client's TLS and the CONNECT cost.
* mitmproxy  ``mitmdump`` in regular mode (the peer), its own CA, verifying the upstream
             against the test CA; an addon dials api.openai.com at the upstream's address
             (keeping the name for SNI). From the venv ``bench/proxy.py`` makes (Python >= 3.12;
             ``--no-mitmproxy`` skips it, and an unavailable peer is reported with the reason).

Paths (``httpx2.Client`` each, keep-alive, one connection per path):

* direct     ``https://127.0.0.1:UP`` (the floor every path shares)
* tunnel     ``https://127.0.0.1:UP`` with ``proxy=intercept``: CONNECT, bytes relayed untouched
* intercept  ``https://api.openai.com`` with ``proxy=intercept``: TLS terminated, guarded, TLS again
* gateway    ``http://127.0.0.1:G/openai``
* mitmproxy  ``https://api.openai.com`` with ``proxy=mitmdump``: TLS terminated, relayed, TLS again

Latency: one request at a time, rounds alternating the paths (order rotated each round),
after a warm-up: ``--n`` rounds of a small Responses-API JSON and ``--n-jpeg`` rounds of a
multipart image edit with a ~``--jpeg-bytes`` JPEG carrying EXIF and GPS. p50/p99 of the
client-side time to the last response byte; added = path minus direct; paired = median of the
per-round differences. Ratios: intercept's added p50 over mitmproxy's and over the gateway's.

Handshakes: the cost of a new client connection up to a finished TLS handshake (what a client
pays before its first request), ``--handshakes`` rounds, alternating: direct TLS to the
upstream; tunnel (CONNECT, then TLS end to end with the upstream); intercept with a warm
certificate cache (api.openai.com again); intercept with a cold cache (a new name each time,
``c<i>.api.openai.com``, so the proxy makes a key and a certificate first); mitmproxy (same
host each time, so its certificate cache is warm; it dials the upstream before answering the
handshake). Medians and p90; ratios cold ÷ warm and intercept warm ÷ direct. Also, in
process: ``Authority.leaf_context`` for a new host and for a cached one.

Run with the project's venv::

    .venv/bin/python bench/intercept.py                  # 1000 + 40 rounds, 300 handshakes
    .venv/bin/python bench/intercept.py --quick          # smoke run, well under a minute
    .venv/bin/python bench/intercept.py --no-mitmproxy --json > intercept.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from _common import progress, revision

import veilpix
from proxy import (  # bench/proxy.py: the same upstream, inputs and mitmproxy venv
    API_KEY,
    SMALL,
    Proc,
    find_mitmdump,
    free_port,
    make_jpeg,
    multipart,
    pct,
    upstream_app,
)

HOST = "api.openai.com"

MITM_ADDON = """\
import os

UPSTREAM = ("127.0.0.1", int(os.environ["VEILPIX_BENCH_UPSTREAM"]))


class Redirect:
    def server_connect(self, data):
        if data.server.address and data.server.address[0].endswith("api.openai.com"):
            data.server.address = UPSTREAM  # SNI and the certificate check keep the name


addons = [Redirect()]
"""


# --------------------------------------------------------------------------- test PKI


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and an upstream certificate; returns (ca, cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("bench vendor root"))
        .issuer_name(name("bench vendor root"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [
        x509.DNSName(HOST),
        x509.DNSName(f"*.{HOST}"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
    ]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(HOST))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "vendor-ca.pem", folder / "vendor-cert.pem", folder / "vendor-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# --------------------------------------------------------------------------- servers


def build_gateway(tmp: Path, upstream_port: int, vendor_ca: Path, log_name: str) -> Any:
    from veilpix import AuditLog, Guard, Policy
    from veilpix.proxy import Gateway
    from veilpix.proxy._upstream import UpstreamPool

    log = AuditLog(tmp / log_name)
    pool = UpstreamPool(resolve={HOST: ("127.0.0.1", upstream_port)}, extra_ca=str(vendor_ca))
    return Gateway({"": Guard(Policy(), log)}, upstream=pool), log


def serve(args: argparse.Namespace) -> None:
    """Child process: the upstream, the gateway or the intercept proxy, until SIGTERM."""
    tmp = Path(args.tmp)
    vendor_ca, cert, key = tmp / "vendor-ca.pem", tmp / "vendor-cert.pem", tmp / "vendor-key.pem"
    if args.serve in ("upstream", "gateway"):
        import uvicorn

        log = None
        options: dict[str, Any] = {}
        if args.serve == "upstream":
            app: Any = upstream_app
            options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        else:
            app, log = build_gateway(tmp, args.upstream_port, vendor_ca, "gateway.db")
            app.base_urls["openai"] = f"https://{HOST}/v1"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            **options,
        )
        try:
            uvicorn.Server(config).run()
        finally:
            if log is not None:
                log.close()
        return

    from veilpix._ca import Authority
    from veilpix.proxy._intercept import InterceptProxy

    async def main() -> None:
        gateway, log = build_gateway(tmp, args.upstream_port, vendor_ca, "intercept.db")
        cold = {f"c{i}.{HOST}": "openai" for i in range(args.cold)}
        proxy = InterceptProxy(gateway, Authority.load(tmp / "ca"), vendor_hosts=cold)
        await proxy.start("127.0.0.1", args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await proxy.aclose()
        await gateway.aclose()
        log.close()

    asyncio.run(main())


def child(role: str, port: int, tmp: Path, upstream_port: int = 0, cold: int = 0) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        role,
        "--port",
        str(port),
        "--tmp",
        str(tmp),
        "--upstream-port",
        str(upstream_port),
        "--cold",
        str(cold),
    ]


def launch(
    name: str,
    cmd: list[str],
    port: int,
    tmp: Path,
    env: dict[str, str] | None = None,
    ready: Any = None,
) -> Proc:
    err = tmp / f"{name}.err"
    with err.open("wb") as fh:
        popen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, env=env)
    proc = Proc(name, popen, port, err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and popen.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            if ready is None or ready():
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{name} did not start: {err.read_text(errors='replace')[-800:]}")


# --------------------------------------------------------------------------- latency


def latency(
    name: str,
    clients: dict[str, tuple[httpx2.Client, str]],
    path: str,
    body: bytes,
    content_type: str,
    rounds: int,
    warmup: int,
) -> dict[str, Any]:
    targets = list(clients)
    ms: dict[str, list[float]] = {t: [] for t in targets}
    errors = dict.fromkeys(targets, 0)
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": content_type}

    def once(t: str) -> float:
        client, base = clients[t]
        t0 = time.perf_counter()
        try:
            ok = client.post(base + path, content=body, headers=headers).status_code == 200
        except httpx2.HTTPError as exc:
            ok = False
            print(f"{name} via {t}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not ok:
            errors[t] += 1
        return (time.perf_counter() - t0) * 1000

    for _ in range(warmup):
        for t in targets:
            once(t)
    for i in range(rounds):
        if i % 25 == 0:
            progress(f"latency {name}: round {i}/{rounds}")
        k = i % len(targets)
        for t in targets[k:] + targets[:k]:
            ms[t].append(once(t))
    out: dict[str, Any] = {"call": name, "rounds": rounds, "errors": errors}
    for t in targets:
        out[t] = {"p50_ms": pct(ms[t], 0.5), "p99_ms": pct(ms[t], 0.99)}
        if t != "direct":
            out[t]["added_p50_ms"] = out[t]["p50_ms"] - pct(ms["direct"], 0.5)
            out[t]["added_p99_ms"] = out[t]["p99_ms"] - pct(ms["direct"], 0.99)
            out[t]["paired_ms"] = statistics.median(
                a - b for a, b in zip(ms[t], ms["direct"], strict=True)
            )
    return out


# --------------------------------------------------------------------------- handshakes


def handshake(port: int, connect: str | None, name: str, ctx: ssl.SSLContext) -> float:
    """ms from connect() to a finished TLS handshake (through a CONNECT when given)."""
    t0 = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        if connect is not None:
            sock.sendall(f"CONNECT {connect} HTTP/1.1\r\nHost: {connect}\r\n\r\n".encode())
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = sock.recv(1)
                if not byte:
                    raise ConnectionError("the proxy closed the connection")
                head += byte
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        tls = ctx.wrap_socket(sock, server_hostname=name)
        ms = (time.perf_counter() - t0) * 1000
        tls.close()
        return ms
    finally:
        sock.close()


def handshakes(kinds: dict[str, Any], rounds: int) -> dict[str, Any]:
    ms: dict[str, list[float]] = {k: [] for k in kinds}
    for k, make in kinds.items():  # warm-up (not "cold": its names are used once each)
        if k != "intercept cold":
            make(-1)
    for i in range(rounds):
        if i % 25 == 0:
            progress(f"handshakes: round {i}/{rounds}")
        names = list(kinds)
        j = i % len(names)
        for k in names[j:] + names[:j]:
            ms[k].append(kinds[k](i))
    return {
        k: {"p50_ms": statistics.median(v), "p90_ms": pct(v, 0.9), "n": len(v)}
        for k, v in ms.items()
    }


def leaf_cost(folder: Path, n: int) -> dict[str, float]:
    from veilpix._ca import Authority

    authority = Authority.load(folder)
    cold, warm = [], []
    for i in range(n):
        t0 = time.perf_counter()
        authority.leaf_context(f"leaf{i}.{HOST}")
        t1 = time.perf_counter()
        authority.leaf_context(f"leaf{i}.{HOST}")
        t2 = time.perf_counter()
        cold.append((t1 - t0) * 1000)
        warm.append((t2 - t1) * 1000)
    return {"new_ms": statistics.median(cold), "cached_ms": statistics.median(warm)}


# --------------------------------------------------------------------------- report


def print_report(doc: dict[str, Any]) -> None:
    print(
        f"veilpix {doc['veilpix']}, Python {doc['python']}, {doc['cores']} cores; "
        f"peer: {doc['mitmproxy']}"
    )
    print(f"JPEG {doc['jpeg_bytes']:,} B with EXIF and GPS; TLS 1.3, ECDSA P-256 everywhere\n")
    print("Latency, one request at a time (ms)")
    print(
        f"  {'call':<11} {'path':<10} {'p50':>8} {'p99':>8} {'added p50':>10} "
        f"{'added p99':>10} {'paired':>8} {'errors':>6}"
    )
    for s in doc["latency"]:
        for t in ("direct", "tunnel", "intercept", "gateway", "mitmproxy"):
            if t not in s:
                continue
            r = s[t]
            extra = (
                (f"{r['added_p50_ms']:>+10.2f} {r['added_p99_ms']:>+10.2f} {r['paired_ms']:>+8.2f}")
                if t != "direct"
                else " " * 30
            )
            print(
                f"  {s['call'] if t == 'direct' else '':<11} {t:<10} {r['p50_ms']:>8.2f} "
                f"{r['p99_ms']:>8.2f} {extra} {s['errors'][t]:>6}"
            )
        print()
    print("Handshake: connect to a finished TLS handshake (ms)")
    print(f"  {'path':<16} {'p50':>8} {'p90':>8} {'n':>5}")
    for k, r in doc["handshakes"].items():
        print(f"  {k:<16} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['n']:>5}")
    leaf = doc["leaf"]
    print(
        f"  in process: Authority.leaf_context new host {leaf['new_ms']:.2f} ms, "
        f"cached {leaf['cached_ms'] * 1000:.1f} µs\n"
    )
    print("Ratios (same run)")
    for line in doc["ratios"]:
        print(f"  {line}")
    print(f"\nintercept log afterwards: {doc['log_check']}")
    print(f"bench took {doc['bench_seconds']:.1f} s")


def ratios(doc: dict[str, Any]) -> list[str]:
    out = []
    for s in doc["latency"]:
        i = s["intercept"]["added_p50_ms"]
        line = f"{s['call']}: intercept adds {i:.2f} ms (p50) to a direct call"
        if "mitmproxy" in s:
            m = s["mitmproxy"]["added_p50_ms"]
            line += f"; mitmproxy adds {m:.2f} ms: {i / m:.2f}x mitmproxy's" if m > 0 else ""
        g = s["gateway"]["added_p50_ms"]
        line += f"; the gateway adds {g:.2f} ms: intercept - gateway = {i - g:+.2f} ms"
        out.append(line)
    h = doc["handshakes"]
    cold, warm = h["intercept cold"]["p50_ms"], h["intercept warm"]["p50_ms"]
    line = (
        f"handshake: cold cache {cold:.2f} ms / warm {warm:.2f} ms = {cold / warm:.2f}x; "
        f"warm / direct = {warm / h['direct']['p50_ms']:.2f}x"
    )
    if "mitmproxy" in h:
        line += f"; warm / mitmproxy = {warm / h['mitmproxy']['p50_ms']:.2f}x"
    out.append(line)
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=1000, help="small-JSON latency rounds (1000)")
    ap.add_argument("--n-jpeg", type=int, default=40, help="JPEG-edit latency rounds (40)")
    ap.add_argument("--jpeg-bytes", type=int, default=2_000_000, help="JPEG size (2 MB)")
    ap.add_argument("--handshakes", type=int, default=300, help="handshake rounds (300)")
    ap.add_argument("--no-mitmproxy", action="store_true", help="skip the mitmproxy peer")
    ap.add_argument("--quick", action="store_true", help="smoke run: 150/8 rounds, 60 handshakes")
    ap.add_argument("--json", action="store_true", help="print machine-readable results only")
    ap.add_argument("--serve", choices=("upstream", "gateway", "intercept"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    ap.add_argument("--upstream-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cold", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    if args.quick:
        args.n, args.n_jpeg, args.handshakes = 150, 8, 60
    started = time.perf_counter()
    from veilpix._ca import Authority

    with tempfile.TemporaryDirectory(prefix="veilpix-bench-intercept-") as name:
        tmp = Path(name)
        vendor_ca, _, _ = make_pki(tmp)
        authority = Authority.init(tmp / "ca")
        trust = tmp / "trust.pem"  # what the clients trust: the vendor's root and the proxy's CA
        trust.write_bytes(vendor_ca.read_bytes() + authority.cert_pem)
        mitm_exe, mitm_version = (None, "skipped (--no-mitmproxy)")
        if not args.no_mitmproxy:
            mitm_exe, mitm_version = find_mitmdump(install=True)
        procs: list[Proc] = []
        clients: list[httpx2.Client] = []
        try:
            up_port, ic_port, gw_port = free_port(), free_port(), free_port()
            procs.append(launch("upstream", child("upstream", up_port, tmp), up_port, tmp))
            cold = args.handshakes + 1
            procs.append(
                launch("intercept", child("intercept", ic_port, tmp, up_port, cold), ic_port, tmp)
            )
            procs.append(launch("gateway", child("gateway", gw_port, tmp, up_port), gw_port, tmp))
            mitm_ca = None
            if mitm_exe is not None:
                mitm_port = free_port()
                addon = tmp / "mitm_addon.py"
                addon.write_text(MITM_ADDON)
                confdir = tmp / "mitm"
                env = {**os.environ, "VEILPIX_BENCH_UPSTREAM": str(up_port)}
                cmd = [
                    mitm_exe,
                    "--listen-host",
                    "127.0.0.1",
                    "--listen-port",
                    str(mitm_port),
                    "-q",
                    "-s",
                    str(addon),
                    "--set",
                    f"confdir={confdir}",
                    "--set",
                    f"ssl_verify_upstream_trusted_ca={vendor_ca}",
                ]
                mitm_ca = confdir / "mitmproxy-ca-cert.pem"
                procs.append(launch("mitmproxy", cmd, mitm_port, tmp, env, mitm_ca.exists))
            verify = ssl.create_default_context(cafile=str(trust))
            paths: dict[str, tuple[httpx2.Client, str]] = {}

            def client(**kw: Any) -> httpx2.Client:
                c = httpx2.Client(timeout=60, trust_env=False, **kw)
                clients.append(c)
                return c

            direct = f"https://127.0.0.1:{up_port}/v1"
            ic_url = f"http://127.0.0.1:{ic_port}"
            paths["direct"] = client(verify=verify), direct
            paths["tunnel"] = client(verify=verify, proxy=ic_url), direct
            paths["intercept"] = client(verify=verify, proxy=ic_url), f"https://{HOST}/v1"
            paths["gateway"] = client(), f"http://127.0.0.1:{gw_port}/openai"
            mitm_verify = None
            if mitm_ca is not None:
                mitm_verify = ssl.create_default_context(cafile=str(mitm_ca))
                mitm_url = f"http://127.0.0.1:{procs[-1].port}"
                paths["mitmproxy"] = (
                    client(verify=mitm_verify, proxy=mitm_url),
                    f"https://{HOST}/v1",
                )
            progress("building the JPEG ...")
            photo = make_jpeg(args.jpeg_bytes)
            form, form_type = multipart(photo)
            series = [
                latency("small JSON", paths, "/responses", SMALL, "application/json", args.n, 20),
                latency("JPEG edit", paths, "/images/edits", form, form_type, args.n_jpeg, 2),
            ]

            def hs(port: int, connect: Any, name: Any, ctx: ssl.SSLContext) -> Any:
                return lambda i: handshake(
                    port,
                    connect(i) if callable(connect) else connect,
                    name(i) if callable(name) else name,
                    ctx,
                )

            kinds = {
                "direct": hs(up_port, None, "127.0.0.1", verify),
                "tunnel": hs(ic_port, f"127.0.0.1:{up_port}", "127.0.0.1", verify),
                "intercept warm": hs(ic_port, f"{HOST}:443", HOST, verify),
                "intercept cold": hs(
                    ic_port, lambda i: f"c{i}.{HOST}:443", lambda i: f"c{i}.{HOST}", verify
                ),
            }
            if mitm_verify is not None:
                kinds["mitmproxy"] = hs(procs[-1].port, f"{HOST}:443", HOST, mitm_verify)
            shakes = handshakes(kinds, args.handshakes)
            leaf = leaf_cost(tmp / "ca", 30)
        finally:
            for c in clients:
                c.close()
            for proc in reversed(procs):
                proc.stop()
        progress("")
        from veilpix import AuditLog

        expected = sum(s["rounds"] + (20 if s["call"] == "small JSON" else 2) for s in series)
        with AuditLog(tmp / "intercept.db") as log:
            report = log.verify()
            records = sum(1 for r in log.records() if r.who.get("door") == "intercept")
        check = f"verify ok={report.ok}, {records} intercept records for {expected} calls"
    doc: dict[str, Any] = {
        "veilpix": f"{veilpix.__version__} ({revision('proxy', 'sdk')})",
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "mitmproxy": mitm_version,
        "jpeg_bytes": len(photo),
        "latency": series,
        "handshakes": shakes,
        "leaf": leaf,
        "log_check": check,
    }
    doc["ratios"] = ratios(doc)
    doc["bench_seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
