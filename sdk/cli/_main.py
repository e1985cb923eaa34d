"""The ``veilpix`` command line.

Kept light on purpose: only argparse is imported at start-up; the image pipeline, rich and the
worker pool are imported by the command that needs them, so ``veilpix scrub`` on a folder of
JPEGs spends its time on the JPEGs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from veilpix import __version__
from veilpix._errors import VeilpixError

if TYPE_CHECKING:
    from veilpix._config import Config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
veilpix strips every piece of metadata from images (EXIF and GPS, XMP, IPTC, maker notes,
thumbnails and previews, comments, text chunks, C2PA manifests), keeps the picture upright
and otherwise untouched, and reports what it found.
"""
_EPILOG = """\
examples:
  veilpix demo                          see what veilpix finds and removes in a sample photo
  veilpix inspect IMG_0042.HEIC         list the privacy-relevant metadata of a file
  veilpix scrub ~/Pictures/trip -o out  clean a folder (recursive) into out/
  veilpix scrub photo.jpg --in-place    clean a file in place
  veilpix scrub photos -o out --json    machine-readable results for scripts
  veilpix scrub team.jpg -o out --blur-faces --max-side 1024
                                        hide faces and downscale before sending
  veilpix preview team.jpg -o p.png --blur-faces
                                        look at what would be sent
  veilpix audit verify                  check the transfer log's chain and signatures
  veilpix audit report -o register.html the transfer register for compliance
  veilpix proxy --config veilpix.toml   the local gateway apps point their base URL at
  veilpix config check --config veilpix.toml
                                        validate the settings file
  veilpix ca init                       the local CA of the intercept (HTTPS_PROXY) mode
  eval "$(veilpix env)"                 send this shell's apps through the intercept proxy

docs: https://github.com/veilpix/veilpix/tree/main/docs
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def _quality(text: str) -> int:
    value = _positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"quality runs from 1 to 100, got {value}")
    return value


def _add_policy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image policy")
    g.add_argument(
        "--format",
        choices=["auto", "jpeg", "png", "webp"],
        default="auto",
        help="output format (default: auto = keep each format; HEIC/AVIF become JPEG, or PNG with alpha)",
    )
    g.add_argument(
        "--quality",
        type=_quality,
        metavar="1-100",
        help="quality of re-encoded lossy output (default: the input's own JPEG tables, else 90)",
    )
    g.add_argument(
        "--no-standard-icc",
        action="store_true",
        help="drop every colour profile, converting pixels to sRGB (default keeps sRGB/Display P3/Adobe RGB)",
    )
    g.add_argument(
        "--verify-decode",
        action="store_true",
        help="also fully decode losslessly stripped files (slower; catches damage already in the input)",
    )
    g.add_argument(
        "--max-input-pixels",
        type=_positive_int,
        metavar="N",
        help="refuse images above N pixels per frame",
    )
    g.add_argument(
        "--max-bytes", type=_positive_int, metavar="N", help="refuse files above N bytes"
    )
    g.add_argument(
        "--max-side",
        type=_positive_int,
        metavar="N",
        help="downscale so neither side exceeds N pixels (aspect kept, never enlarged)",
    )
    g.add_argument(
        "--max-pixels",
        type=_positive_int,
        metavar="N",
        help="downscale to at most N pixels in all (e.g. 4000000)",
    )
    f = p.add_argument_group("faces (needs the 'faces' extra: pip install 'veilpix[faces]')")
    f.add_argument("--blur-faces", action="store_true", help="hide every face found")
    f.add_argument(
        "--blur-mode",
        choices=["blur", "pixelate", "fill"],
        default="blur",
        help="how faces are hidden (default: blur, a strong Gaussian)",
    )
    f.add_argument(
        "--face-padding",
        type=float,
        default=1.6,
        metavar="X",
        help="grow each face box X times before hiding it (default 1.6)",
    )
    f.add_argument(
        "--upright-only",
        action="store_true",
        help="skip the passes that look for faces in sideways and upside-down pictures",
    )
    f.add_argument(
        "--require-consent",
        action="store_true",
        help="refuse images with unblurred faces unless --consent is given",
    )
    f.add_argument(
        "--consent",
        metavar="REF",
        help="reference of the consent held for the people shown (recorded in the report)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veilpix",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veilpix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "inspect",
        help="show the privacy-relevant metadata in image files",
        description="Show what an image carries: GPS position, device and serial numbers, owner, "
        "timestamps, software, thumbnails, XMP, IPTC, comments, C2PA, colour profile. "
        "Files are only read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix inspect IMG_0042.HEIC\n  veilpix inspect photos/ --json | jq '.[].gps'",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--containers", action="store_true", help="also list every container element")

    p = sub.add_parser(
        "scrub",
        help="write metadata-free copies of image files",
        description="Write a clean copy of every image: no metadata, upright, otherwise untouched. "
        "Folders are walked recursively and their layout is kept under OUTDIR. Originals are "
        "never changed unless --in-place is given. A file that fails is listed with its "
        "reason; the others are still done, and the exit code is 1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix scrub photos -o clean\n  veilpix scrub a.jpg b.heic -o out --json\n"
        "  veilpix scrub photos --in-place -j 4",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-o", "--output", metavar="OUTDIR", help="folder for the clean copies (created if missing)"
    )
    where.add_argument(
        "--in-place", action="store_true", help="replace each original with its clean copy"
    )
    p.add_argument(
        "-j", "--jobs", type=_positive_int, metavar="N",
        help=f"parallel workers (default: number of cores, {os.cpu_count() or 1} here)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON results instead of tables")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary table"
    )
    _add_policy_options(p)

    p = sub.add_parser(
        "demo",
        help="run veilpix on a built-in sample photo (no files needed)",
        description="Build a sample photo in memory with GPS, camera serial number, owner, "
        "timestamps, a thumbnail of a different picture, XMP, IPTC and a comment; sanitize "
        "it and show what was found and removed.",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="also write before.jpg, after.jpg and preview.png here",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser(
        "preview",
        help="draw a before/after picture of what veilpix does to one image",
        description="Sanitize one image in memory with the given policy and write a PNG: the "
        "original (upright) beside what veilpix would send, faces boxed, and a legend of the "
        "metadata found and removed. The image itself is not written anywhere.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix preview IMG_0042.jpg -o preview.png\n"
        "  veilpix preview team.jpg -o team-preview.png --blur-faces --max-side 1024",
    )
    p.add_argument("path", metavar="FILE", help="the image to preview")
    p.add_argument(
        "-o", "--output", required=True, metavar="PNG", help="where to write the preview"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_policy_options(p)

    from veilpix.cli._audit import add_audit_parser

    add_audit_parser(sub)
    _add_proxy_parsers(sub)
    from veilpix.cli._ca import add_ca_parsers

    add_ca_parsers(sub)
    return parser


_PROXY_EPILOG = """\
examples:
  veilpix proxy                                   127.0.0.1:8787, settings from $VEILPIX_CONFIG
  veilpix proxy --config veilpix.toml --port 9000
  OPENAI_BASE_URL=http://127.0.0.1:8787/openai python app.py
                                                  an app whose OpenAI SDK calls go through it
  VEILPIX_PROXY_TOKEN=$(openssl rand -hex 32) veilpix proxy --host 0.0.0.0 --allow-remote
                                                  serve other machines; they send X-Veilpix-Token
  veilpix ca init && veilpix proxy --intercept    also an HTTPS_PROXY on 127.0.0.1:8788
  eval "$(veilpix env)" && python app.py          an app routed by HTTPS_PROXY, any base URL
  veilpix proxy --workers 0                       one process per core on the same port

Requests to /<vendor>/<path> go to that vendor's base URL (or [vendors.<name>] base_url) +
/<path>, sanitized and logged under [policy]; requests carrying X-Veilpix-App: <name> use
[apps.<name>]. /_veilpix/health and /_veilpix/metrics report on the proxy itself.
SIGTERM or Ctrl-C stops it gracefully and closes the log.
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"ports run from 0 to 65535, got {value}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of workers, got {text!r}") from None
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(
            f"workers must be from 1 to 64 (0: one per core), not {value}"
        )
    return value


def _add_proxy_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config_help = "veilpix.toml to read (default: $VEILPIX_CONFIG, else built-in defaults)"
    p = sub.add_parser(
        "proxy",
        help="run the local gateway that sanitizes and logs apps' vendor calls",
        description="Run the veilpix gateway (needs the 'proxy' extra: pip install "
        "'veilpix[proxy]'). Apps point their vendor SDK's base URL at it. With --intercept, "
        "also an HTTPS_PROXY for apps that take no base URL (docs/intercept.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_PROXY_EPILOG,
    )
    p.add_argument(
        "--host",
        help="address to listen on (default: $VEILPIX_PROXY_HOST, [proxy] host, else 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=_port,
        help="port (default: $VEILPIX_PROXY_PORT, [proxy] port, else 8787; 0 picks a free one)",
    )
    p.add_argument("--config", metavar="TOML", help=config_help)
    p.add_argument(
        "--log",
        metavar="FILE",
        help="the transfer log (default: $VEILPIX_LOG, else [log] path, else the user data folder)",
    )
    p.add_argument(
        "--intercept",
        action="store_true",
        help="also run the HTTPS_PROXY intercept proxy (needs 'veilpix ca init' first; see "
        "docs/intercept.md)",
    )
    p.add_argument(
        "--intercept-port",
        type=_port,
        metavar="N",
        help="port of the intercept proxy (default: [intercept] port, else 8788)",
    )
    p.add_argument(
        "--only-vendors",
        action="store_true",
        default=None,
        help="intercept proxy: refuse CONNECT to hosts that are not AI vendors instead of "
        "tunnelling them ([intercept] only_vendors)",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="processes serving the port ([proxy] workers, else 1; 0: one per core). More "
        "workers use more cores and memory; they share the log and the metrics",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="allow a non-loopback --host (requires a token)",
    )
    p.add_argument(
        "--token",
        help="token clients must send in X-Veilpix-Token (default: $VEILPIX_PROXY_TOKEN or the "
        "variable [proxy] token_env names; prefer the environment: arguments show in ps)",
    )

    p = sub.add_parser(
        "config",
        help="check a veilpix.toml",
        description="Work with the veilpix settings file.",
    )
    actions = p.add_subparsers(dest="config_action", metavar="ACTION")
    c = actions.add_parser(
        "check",
        help="validate the file and show what it sets",
        description="Load the file, build the policy of every app and the log path, and print a "
        "summary. Exit 0 when valid, 2 with the error otherwise.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix config check --config veilpix.toml\n"
        "  VEILPIX_CONFIG=veilpix.toml veilpix config check --json",
    )
    c.add_argument("--config", metavar="TOML", help=config_help)
    c.add_argument("--json", action="store_true", help="print the summary as JSON")


def _policy(args: argparse.Namespace) -> object:
    from veilpix._policy import Policy

    kwargs: dict[str, object] = {
        "output_format": args.format,
        "quality": args.quality,
        "keep_standard_icc": not args.no_standard_icc,
        "verify_decode": args.verify_decode,
        "faces": args.blur_mode if args.blur_faces else "off",
        "face_padding": args.face_padding,
        "face_rotations": not args.upright_only,
        "require_consent_for_faces": args.require_consent,
        "max_side": args.max_side,
        "max_pixels": args.max_pixels,
    }
    if args.max_input_pixels:
        kwargs["max_input_pixels"] = args.max_input_pixels
    if args.max_bytes:
        kwargs["max_bytes"] = args.max_bytes
    return Policy(**kwargs)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "inspect":
            from veilpix.cli._inspect import run_inspect

            return run_inspect(args)
        if args.command == "scrub":
            from veilpix.cli._scrub import run_scrub

            return run_scrub(args, _policy(args))
        if args.command == "preview":
            from veilpix.image._preview import run_preview

            return run_preview(args, _policy(args))
        if args.command == "audit":
            from veilpix.cli._audit import run_audit

            return run_audit(args)
        if args.command == "proxy":
            if not args.intercept and (args.intercept_port is not None or args.only_vendors):
                parser.exit(
                    EXIT_USAGE,
                    "veilpix proxy: error: --intercept-port and --only-vendors need --intercept\n",
                )
            return _run_proxy(args)
        if args.command == "config":
            return _run_config(args)
        if args.command in ("ca", "env"):
            from veilpix.cli._ca import run_ca

            return run_ca(args)
        if args.command == "demo":
            from veilpix.cli._demo import run_demo

            return run_demo(args)
    except KeyboardInterrupt:
        print("veilpix: interrupted", file=sys.stderr)
        return 130
    except VeilpixError as exc:
        print(f"veilpix: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    parser.error(f"unknown command {args.command!r}")


def _run_proxy(args: argparse.Namespace) -> int:
    from veilpix._config import load_config
    from veilpix.proxy._serve import serve

    serve(
        load_config(args.config),
        args.host,
        args.port,
        log_path=args.log,
        token=args.token,
        allow_remote=args.allow_remote,
        workers=args.workers,
        intercept=args.intercept,
        intercept_port=args.intercept_port,
        only_vendors=args.only_vendors,
    )
    return EXIT_OK


def _policy_summary(policy: object) -> dict[str, object]:
    import dataclasses

    out: dict[str, object] = {}
    for f in dataclasses.fields(policy):  # type: ignore[arg-type]
        if f.name == "face_detector":
            continue
        value = getattr(policy, f.name)
        if isinstance(value, frozenset):
            value = sorted(value)
        elif hasattr(value, "items"):
            value = dict(value)
        out[f.name] = value
    return out


def _run_config(args: argparse.Namespace) -> int:
    if args.config_action != "check":
        print("usage: veilpix config check [--config TOML] [--json]", file=sys.stderr)
        return EXIT_USAGE
    import json

    from veilpix._config import load_config
    from veilpix.proxy._serve import routable_vendors

    try:
        config = load_config(args.config)
        policies = {"": config.policy(), **{a: config.policy(a) for a in config.apps}}
        log_path = config.log_path()
    except VeilpixError as exc:
        if args.json:
            print(json.dumps({"valid": False, "error": str(exc)}))
        else:
            print(f"veilpix: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    source = str(config.source) if config.source else None
    proxy = config.proxy
    intercept = config.intercept
    if args.json:
        print(json.dumps({
            "valid": True,
            "source": source,
            "log": str(log_path),
            "vendors": {n: {"base_url": v.base_url, "transfer_mechanism": v.transfer_mechanism,
                            "policy": dict(v.policy_settings), **dict(v.record)}
                        for n, v in config.vendors.items()},
            "record": {"default": _record_summary(config, None),
                       "apps": {a: _record_summary(config, a) for a in policies if a}},
            "routable_vendors": routable_vendors(config),
            "policy": _policy_summary(policies[""]),
            "apps": {a: _policy_summary(p) for a, p in policies.items() if a},
            "proxy": {"host": proxy.host, "port": proxy.port, "max_body": proxy.max_body,
                      "allow_remote": proxy.allow_remote, "token_env": proxy.token_env,
                      "token_set": proxy.token is not None},
            "intercept": {"port": intercept.port, "ca_dir": str(config.ca_dir()),
                          "extra_domains": list(intercept.extra_domains),
                          "only_vendors": intercept.only_vendors,
                          "upstream_ca": intercept.upstream_ca,
                          "upstream_hosts": {h: _address(*a)
                                             for h, a in intercept.upstream_hosts.items()}},
        }, indent=2, default=str))  # fmt: skip
        return EXIT_OK
    default = _policy_summary(policies[""])
    print(f"{source or 'built-in defaults (no --config, no $VEILPIX_CONFIG)'}: valid")
    print(f"  log: {log_path}")
    for name, vendor in sorted(config.vendors.items()):
        bits = [f"base_url {vendor.base_url}"] if vendor.base_url else []
        bits += [f"mechanism {vendor.transfer_mechanism!r}"] if vendor.transfer_mechanism else []
        bits += [f"{k} {v!r}" for k, v in vendor.record.items()]
        bits += (
            [f"policy {_settings_text(dict(vendor.policy_settings))}"]
            if vendor.policy_settings
            else []
        )
        print(f"  vendor {name}: {', '.join(bits) or 'defaults'}")
    changed = {k: v for k, v in default.items() if k in config.policy_settings}
    print(f"  policy: {_settings_text(changed) or 'defaults'}")
    print(f"  record: {_record_text(_record_summary(config, None))}")
    for app in sorted(config.apps):
        overrides = {k: v for k, v in _policy_summary(policies[app]).items()
                     if k in config.apps[app]}  # fmt: skip
        print(f"  app {app}: {_settings_text(overrides) or 'same as [policy]'}")
        record = _record_summary(config, app)
        if record != _record_summary(config, None):
            print(f"  app {app} record: {_record_text(record)}")
    token = "set" if proxy.token else "not set"
    print(
        f"  proxy: {proxy.host}:{proxy.port}, max_body {proxy.max_body:,} bytes, "
        f"allow_remote {str(proxy.allow_remote).lower()}, token ${proxy.token_env} {token}"
    )
    bits = [f"port {intercept.port}", f"ca_dir {config.ca_dir()}"]
    if intercept.extra_domains:
        bits.append(f"extra_domains {', '.join(intercept.extra_domains)}")
    bits.append(f"only_vendors {str(intercept.only_vendors).lower()}")
    if intercept.upstream_ca:
        bits.append(f"upstream_ca {intercept.upstream_ca}")
    bits += [f"{h} via {_address(*a)}" for h, a in intercept.upstream_hosts.items()]
    print(f"  intercept: {', '.join(bits)}")
    return EXIT_OK


def _record_summary(config: Config, app: str | None) -> dict[str, object]:
    """What ``app``'s proxied calls are recorded as doing, and the record headers allowed."""
    settings = config.record_settings(app)
    return {
        "purpose": settings.purpose,
        "legal_basis": settings.legal_basis,
        "headers": sorted(settings.headers),
    }


def _record_text(record: dict[str, object]) -> str:
    headers = record["headers"]
    allowed = ", ".join(headers) if isinstance(headers, list) and headers else "none"
    purpose = repr(record["purpose"]) if record["purpose"] else "-"
    return (
        f"purpose {purpose}, legal_basis {record['legal_basis'] or '-'}, "
        f"X-Veilpix record headers: {allowed}"
    )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _settings_text(settings: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
