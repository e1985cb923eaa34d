"""``veilpix proxy``: the local gateway (and, with --intercept, the HTTPS_PROXY door)."""

from __future__ import annotations

import argparse
import sys

from veilpix._config import load_config
from veilpix._errors import DOCS
from veilpix.cli._exit import EXIT_OK, EXIT_USAGE
from veilpix.cli._options import Subparsers, port_number
from veilpix.proxy._serve import serve

__all__ = ["CONFIG_HELP", "add_parser", "run"]

CONFIG_HELP = "veilpix.toml to read (default: $VEILPIX_CONFIG, else built-in defaults)"

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


def add_parser(sub: Subparsers, summary: str) -> None:
    """The ``proxy`` command's parser."""
    p = sub.add_parser(
        "proxy",
        help=summary,
        description="Run the veilpix gateway (needs the 'proxy' extra). Apps point their "
        "vendor SDK's base URL at it. With --intercept, also an HTTPS_PROXY for apps that "
        f"take no base URL ({DOCS}intercept.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_PROXY_EPILOG,
    )
    p.add_argument(
        "--host",
        help="address to listen on (default: $VEILPIX_PROXY_HOST, [proxy] host, else 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=port_number,
        help="port (default: $VEILPIX_PROXY_PORT, [proxy] port, else 8787; 0 picks a free one)",
    )
    p.add_argument("--config", metavar="TOML", help=CONFIG_HELP)
    p.add_argument(
        "--log",
        metavar="FILE|URL",
        help="the transfer log: a file, or a fleet's PostgreSQL URL (default: $VEILPIX_LOG, "
        "else [log] url or path, else the user data folder)",
    )
    p.add_argument(
        "--intercept",
        action="store_true",
        help="also run the HTTPS_PROXY intercept proxy (needs 'veilpix ca init' first)",
    )
    p.add_argument(
        "--intercept-port",
        type=port_number,
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


def run(args: argparse.Namespace) -> int:
    if not args.intercept and (args.intercept_port is not None or args.only_vendors):
        # a usage error, as argparse reports one
        print(
            "veilpix proxy: error: --intercept-port and --only-vendors need --intercept",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)
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
