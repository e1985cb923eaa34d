"""``veilpix ca`` (the intercept proxy's local CA) and ``veilpix env`` (the shell lines that
send an app through it). See docs/intercept.md.

Exit codes: 0 fine, 2 usage or configuration error, or a CA that is missing, damaged or
unsafe (the message says which, and what to run).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from veilpix._ca import Authority, write_bundle
from veilpix._config import Config, load_config
from veilpix._errors import CAError, ConfigError
from veilpix._net import check_domain, no_proxy_split, uncovered_patterns
from veilpix.cli._exit import EXIT_OK, EXIT_USAGE
from veilpix.cli._options import Subparsers

if TYPE_CHECKING:
    from veilpix._ca import Authority
    from veilpix._config import Config

__all__ = ["ENV_NAMES", "add_ca_parser", "add_env_parser", "run_ca"]


# What `veilpix env` sets, in print order. SSL_CERT_FILE (OpenSSL, Python's ssl, httpx),
# REQUESTS_CA_BUNDLE (requests) and CURL_CA_BUNDLE (curl) replace the default roots, so they
# name the bundle (system roots + the CA); NODE_EXTRA_CA_CERTS adds to Node's roots, so it
# names the CA alone. Lower-case https_proxy wins over HTTPS_PROXY in curl, Python and Node,
# so both are set; NODE_USE_ENV_PROXY=1 makes Node (24 and later) use them.
ENV_NAMES = (
    "HTTPS_PROXY",
    "https_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "NODE_USE_ENV_PROXY",
)

_CA_EPILOG = """\
examples:
  veilpix ca init                          create the CA (key 0600 in the user data folder)
  veilpix ca init --extra-domain gateway.corp.example
                                           ... also permitted for a host of your own
  veilpix ca path                          the CA certificate to give apps and trust stores
  veilpix ca bundle -o ~/veilpix-roots.pem system roots + the CA, for SSL_CERT_FILE
  veilpix ca rotate                        new key and certificate; the old ones are gone
  eval "$(veilpix env)"                    send this shell's apps through the intercept proxy

The CA signs only for the AI vendors' hosts veilpix knows (plus [intercept] extra_domains),
never for other sites or IP addresses: its certificate says so (X.509 Name Constraints).
The folder: --dir, else $VEILPIX_CA_DIR, else [intercept] ca_dir in --config /
$VEILPIX_CONFIG, else "ca" in the veilpix user data folder.
"""

_ENV_EPILOG = """\
examples:
  eval "$(veilpix env)"                    this shell's apps now go through the proxy
  veilpix env --proxy http://127.0.0.1:9000
  veilpix env --json | jq -r .SSL_CERT_FILE
  eval "$(veilpix env --unset)"            back to direct connections

SSL_CERT_FILE, REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE name bundle.pem in the CA folder
(system roots + the veilpix CA, rewritten on every run); NODE_EXTRA_CA_CERTS names the CA
certificate alone.

NO_PROXY (and no_proxy) entries that would send a vendor's hosts around the proxy, unchecked
(*, .openai.com, googleapis.com, ...), are removed from it, and stderr says which; the rest
(localhost, internal names) is kept. Apps started before the eval keep their old values.
"""


def _domain(text: str) -> str:
    try:
        return check_domain(text, "--extra-domain")
    except ConfigError as exc:
        message = exc.message.removeprefix("--extra-domain: ")
        raise argparse.ArgumentTypeError(f"{message} ({exc.hint})") from None


def _proxy_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        port = None
        parts = urlsplit("")
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(
            f"expected the proxy as http://HOST:PORT (it speaks plain HTTP CONNECT), got {text!r}"
        )
    return f"http://{parts.netloc}"


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        metavar="DIR",
        help="the CA folder (default: $VEILPIX_CA_DIR, [intercept] ca_dir, else the user "
        "data folder)",
    )
    common.add_argument(
        "--config", metavar="TOML", help="veilpix.toml to read (default: $VEILPIX_CONFIG)"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    return common


def add_ca_parser(sub: Subparsers, summary: str) -> None:
    """The ``ca`` command's parser."""
    common = _common()
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument(
        "--extra-domain",
        action="append",
        default=[],
        type=_domain,
        metavar="NAME",
        help="also permit NAME and its subdomains (repeatable; added to [intercept] extra_domains)",
    )

    ca = sub.add_parser(
        "ca",
        help=summary,
        description="The intercept proxy terminates TLS for AI vendor hosts with certificates "
        "from a local CA. This CA is name-constrained: it can sign only for the vendors' "
        "hosts (and configured extra domains), so trusting it does not let it impersonate "
        "other sites. Its private key stays in a 0600 file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_CA_EPILOG,
    )
    actions = ca.add_subparsers(dest="ca_action", metavar="ACTION")
    actions.add_parser(
        "init",
        parents=[common, extra],
        help="create the CA",
        description="Create an ECDSA P-256 CA whose name constraints permit only the vendors' "
        "hosts plus the extra domains. Refuses when a CA already exists (see rotate).",
    )
    actions.add_parser(
        "rotate",
        parents=[common, extra],
        help="replace the CA's key and certificate",
        description="Make a new key and certificate (the permitted names recomputed from the "
        "vendors veilpix knows and the extra domains) and overwrite the old ones. Apps and "
        "trust stores must trust the new certificate; bundles written with `ca bundle -o` "
        "must be written again (bundle.pem in the CA folder is refreshed here).",
    )
    actions.add_parser(
        "path",
        parents=[common],
        help="print the CA certificate's path",
        description="Print the path of the CA certificate (public). --json also gives the key "
        "path, fingerprint, validity and permitted names, and names the vendor hosts a "
        "newer veilpix knows that this CA does not cover.",
    )
    b = actions.add_parser(
        "bundle",
        parents=[common],
        help="write the system roots plus the CA to one PEM file",
        description="SSL_CERT_FILE, REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE replace the default "
        "trust roots "
        "rather than add to them, so point them at a bundle: the system's roots (from "
        "Python's default verify paths, else certifi) followed by the veilpix CA.",
    )
    b.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="where to write it (- for stdout)"
    )


def add_env_parser(sub: Subparsers, summary: str) -> None:
    """The ``env`` command's parser."""
    env = sub.add_parser(
        "env",
        parents=[_common()],
        help=summary,
        description="Print export lines for HTTPS_PROXY (and https_proxy), SSL_CERT_FILE, "
        "REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS and NODE_USE_ENV_PROXY, "
        "quoted for POSIX shells: "
        'eval "$(veilpix env)". Refreshes bundle.pem in the CA folder.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_ENV_EPILOG,
    )
    env.add_argument(
        "--proxy",
        type=_proxy_url,
        metavar="URL",
        help="the intercept proxy (default: http://127.0.0.1:PORT, PORT from [intercept] "
        "port, else 8788)",
    )
    env.add_argument(
        "--unset", action="store_true", help="print the line that removes these variables"
    )


def run_ca(args: argparse.Namespace) -> int:
    if args.command == "env":
        if args.unset:
            print("unset " + " ".join(ENV_NAMES))
            return EXIT_OK
        return _env(args, load_config(args.config))
    action = args.ca_action
    if action is None:
        print("usage: veilpix ca {init,rotate,path,bundle} [--dir DIR] ...", file=sys.stderr)
        return EXIT_USAGE
    config = load_config(args.config)
    directory = config.ca_dir(args.dir)
    if action in ("init", "rotate"):
        extra = list(dict.fromkeys([*config.intercept.extra_domains, *args.extra_domain]))
        if action == "rotate" and not (directory / "ca-key.pem").exists():
            raise CAError(
                f"no veilpix CA in {str(directory)!r} to rotate",
                hint="create one with `veilpix ca init`",
            )
        authority = Authority.init(directory, extra_domains=extra, replace=action == "rotate")
        return _report_new(args, config, authority, extra, rotated=action == "rotate")
    authority = Authority.load(directory)
    if not args.json:
        _note_missing(authority, config)
    if action == "path":
        if args.json:
            print(json.dumps(_summary(authority, config), indent=2))
        else:
            print(authority.cert_path)
        return EXIT_OK
    return _bundle(args, authority)


def _note_missing(authority: Authority, config: Config) -> None:
    missing = authority.missing(config.intercept.extra_domains)
    if missing:
        print(
            f"veilpix: note: this CA does not cover {', '.join(missing)} (vendor hosts of a "
            "newer veilpix, or new extra_domains); `veilpix ca rotate` makes one that does",
            file=sys.stderr,
        )


def _summary(authority: Authority, config: Config) -> dict[str, object]:
    cert = authority.certificate
    return {
        "dir": str(authority.directory),
        "cert": str(authority.cert_path),
        "key": str(authority.key_path),
        "bundle": str(authority.bundle_path) if authority.bundle_path.exists() else None,
        "subject": cert.subject.rfc4514_string(),
        "fingerprint_sha256": authority.fingerprint,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "permitted": list(authority.permitted),
        "excluded": ["0.0.0.0/0", "::/0"],
        "missing": list(authority.missing(config.intercept.extra_domains)),
        "uncovered_patterns": list(uncovered_patterns()),
    }


def _report_new(
    args: argparse.Namespace,
    config: Config,
    authority: Authority,
    extra: list[str],
    *,
    rotated: bool,
) -> int:
    if args.json:
        print(json.dumps(_summary(authority, config), indent=2))
        return EXIT_OK
    cert = authority.certificate
    print(f"veilpix CA {'replaced' if rotated else 'created'} in {authority.directory}")
    print(f"  certificate: {authority.cert_path} (public: this is what apps trust)")
    print(f"  key:         {authority.key_path} (mode 0600; never leaves this folder)")
    print(f"  SHA-256:     {authority.fingerprint}")
    print(f"  valid until: {cert.not_valid_after_utc:%Y-%m-%d}")
    print(
        f"  signs only for {len(authority.permitted)} vendor names and their subdomains "
        "(veilpix ca path --json lists them), never for IP addresses"
    )
    if extra:
        print(f"  extra domains: {', '.join(extra)}")
    for pattern in uncovered_patterns():
        print(f"  not covered: {pattern} (only the hosts veilpix lists for it)")
    if rotated:
        print("apps must trust the new certificate: restart them, and write bundles made with")
        print("`veilpix ca bundle -o` again (bundle.pem in the CA folder is already refreshed)")
    else:
        print('next: eval "$(veilpix env)" in the app\'s shell, then run the intercept proxy')
    return EXIT_OK


def _bundle(args: argparse.Namespace, authority: Authority) -> int:
    if args.output == "-":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bundle.pem"
            roots, source = write_bundle(path, authority.cert_pem)
            sys.stdout.buffer.write(path.read_bytes())
            sys.stdout.flush()
        print(f"{roots} system roots (from {source}) + the veilpix CA", file=sys.stderr)
        return EXIT_OK
    out = Path(args.output).expanduser()
    if out.exists() and os.path.samefile(out, authority.key_path):
        raise CAError(f"refusing to overwrite the CA key {str(out)!r}", hint="choose another -o")
    try:
        roots, source = write_bundle(out, authority.cert_pem)
    except OSError as exc:
        raise CAError(f"cannot write {str(out)!r}: {exc.strerror}") from exc
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(out),
                    "system_roots": roots,
                    "source": source,
                    "ca": str(authority.cert_path),
                    "fingerprint_sha256": authority.fingerprint,
                },
                indent=2,
            )
        )
    else:
        print(f"wrote {out}: {roots} system roots (from {source}) + the veilpix CA")
        print(f"  export SSL_CERT_FILE={shlex.quote(str(out.absolute()))}")
    return EXIT_OK


def _no_proxy(config: Config) -> dict[str, str]:
    """NO_PROXY (in each spelling) without the entries that could send a vendor's host around
    the proxy (only the variables that have such entries; "" when nothing is left), each
    removal said on stderr."""
    hosts = [urlsplit(url).hostname or "" for url in config.base_urls.values()]
    out = {}
    # every spelling clients read: NO_PROXY, no_proxy, No_Proxy (Python takes any case),
    # npm_config_no_proxy (read first by Node's proxy-from-env)
    names = sorted(k for k in os.environ if k.lower() in ("no_proxy", "npm_config_no_proxy"))
    for name in names:
        value = os.environ.get(name)
        if not value:
            continue
        kept, removed = no_proxy_split(value, [h for h in hosts if h])
        if removed:
            out[name] = ",".join(kept)
            rest = f"; kept: {', '.join(kept)}" if kept else "; nothing else was in it"
            print(
                f"veilpix: {name} would send vendor hosts around the proxy, unchecked: "
                f"removed {', '.join(removed)}{rest}",
                file=sys.stderr,
            )
    return out


def _env(args: argparse.Namespace, config: Config) -> int:
    proxy = args.proxy
    if proxy is None:
        port = config.intercept.port
        if port == 0:
            raise ConfigError(
                "[intercept] port is 0 (a free port picked at start), so the address is unknown",
                hint="pass --proxy http://127.0.0.1:PORT with the port the proxy printed",
            )
        proxy = f"http://127.0.0.1:{port}"
    authority = Authority.load(config.ca_dir(args.dir))
    if not args.json:
        _note_missing(authority, config)
    try:
        write_bundle(authority.bundle_path, authority.cert_pem)
    except OSError as exc:
        raise CAError(f"cannot write {str(authority.bundle_path)!r}: {exc.strerror}") from exc
    bundle = str(authority.bundle_path.absolute())
    values = dict(
        zip(
            ENV_NAMES,
            (proxy, proxy, bundle, bundle, bundle, str(authority.cert_path.absolute()), "1"),
            strict=True,
        )
    )
    values.update(_no_proxy(config))
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        for name, value in values.items():
            print(f"export {name}={shlex.quote(value)}" if value else f"unset {name}")
    return EXIT_OK
