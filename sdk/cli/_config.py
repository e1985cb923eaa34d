"""``veilpix config``: ``init`` writes a commented starter veilpix.toml (the file
``veilpix.example.toml`` beside this module, also at examples/veilpix.toml); ``check``
validates one and shows what it sets."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from veilpix._atomic import write_file
from veilpix._config import Config, load_config
from veilpix._config_review import REGISTER_KEYS
from veilpix._errors import ConfigError, VeilpixError
from veilpix._policy import Policy
from veilpix._words import plural
from veilpix.cli._exit import EXIT_OK, EXIT_USAGE
from veilpix.cli._options import Subparsers, shown_log
from veilpix.cli._proxy import CONFIG_HELP
from veilpix.proxy._serve import routable_vendors

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers, summary: str) -> None:
    """The ``config`` command's parser."""
    p = sub.add_parser(
        "config",
        help=summary,
        description="Work with the veilpix settings file.",
    )
    actions = p.add_subparsers(dest="config_action", metavar="ACTION")
    i = actions.add_parser(
        "init",
        help="write a commented starter veilpix.toml",
        description="Write a starter settings file: faces blurred, the log kept 180 days, "
        "the proxy on loopback, and the other settings commented out with what they do. "
        "Never replaces an existing file unless --force is given.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix config init                      writes ./veilpix.toml\n"
        "  veilpix config init -o /etc/veilpix/veilpix.toml\n"
        "  veilpix config init -o - | less          print it instead",
    )
    i.add_argument(
        "-o",
        "--output",
        default="veilpix.toml",
        metavar="FILE",
        help="where to write it (default: veilpix.toml here; - for stdout)",
    )
    i.add_argument("--force", action="store_true", help="replace FILE if it exists")
    i.add_argument("--json", action="store_true", help="say what was written as JSON")
    c = actions.add_parser(
        "check",
        help="validate the file and show what it sets",
        description="Load the file, build the policy of every app and the log path, and print a "
        "summary. Exit 0 when valid, 2 with the error otherwise.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix config check --config veilpix.toml\n"
        "  VEILPIX_CONFIG=veilpix.toml veilpix config check --json",
    )
    c.add_argument("--config", metavar="TOML", help=CONFIG_HELP)
    c.add_argument("--json", action="store_true", help="print the summary as JSON")


def _policy_summary(policy: Policy) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(policy):
        if f.name == "face_detector":
            continue
        value = getattr(policy, f.name)
        if isinstance(value, frozenset):
            value = sorted(value)
        elif hasattr(value, "items"):
            value = dict(value)
        out[f.name] = value
    return out


def starter() -> str:
    """The starter veilpix.toml that ``veilpix config init`` writes."""
    return resources.files("veilpix.cli").joinpath("veilpix.example.toml").read_text("utf-8")


def _init(args: argparse.Namespace) -> int:
    text = starter()
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(args.output)
    if path.is_dir():
        raise ConfigError(
            f"{str(path)!r} is a folder", hint=f"name the file: -o {path / 'veilpix.toml'}"
        )
    if path.exists() and not args.force:
        raise ConfigError(
            f"{str(path)!r} exists; nothing was written",
            hint="check it with: veilpix config check --config "
            f"{str(path)!r}; or replace it with --force",
        )
    try:
        # no secrets in it (tokens come from the environment): readable like any config file,
        # unless the file it replaces was kept narrower
        mode = 0o644 & (os.stat(path).st_mode if path.exists() else 0o777)
        write_file(path, text.encode(), mode=mode & 0o777, replace=args.force)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    if args.json:
        print(json.dumps({"written": str(path), "bytes": len(text.encode())}))
    else:
        quoted = shlex.quote(str(path))
        print(f"wrote {path}; check it with: veilpix config check --config {quoted}")
        print(f"  use it: export VEILPIX_CONFIG={shlex.quote(str(path.absolute()))}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.config_action == "init":
        return _init(args)
    if args.config_action != "check":
        print(
            "usage: veilpix config {init,check} [--config TOML] [--json]  (see --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        config = load_config(args.config)
        policies = {"": config.policy(), **{a: config.policy(a) for a in config.apps}}
        log_path = shown_log(config.log_path())
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
        print(
            json.dumps(
                {
                    "valid": True,
                    "source": source,
                    "log": str(log_path),
                    "vendors": {
                        n: {
                            "base_url": v.base_url,
                            "transfer_mechanism": v.transfer_mechanism,
                            "policy": dict(v.policy_settings),
                            **dict(v.record),
                        }
                        for n, v in config.vendors.items()
                    },
                    "record": {
                        "default": _record_summary(config, None),
                        "apps": {a: _record_summary(config, a) for a in policies if a},
                    },
                    "routable_vendors": routable_vendors(config),
                    "policy": _policy_summary(policies[""]),
                    "apps": {a: _policy_summary(p) for a, p in policies.items() if a},
                    "proxy": {
                        "host": proxy.host,
                        "port": proxy.port,
                        "max_body": proxy.max_body,
                        "allow_remote": proxy.allow_remote,
                        "token_env": proxy.token_env,
                        "token_set": proxy.token is not None,
                    },
                    "register": {
                        "set": _register_set(config),
                        "unset": list(config.register.unset),
                    },
                    "console": _console_summary(config),
                    "intercept": {
                        "port": intercept.port,
                        "ca_dir": str(config.ca_dir()),
                        "extra_domains": list(intercept.extra_domains),
                        "only_vendors": intercept.only_vendors,
                        "upstream_ca": intercept.upstream_ca,
                        "upstream_hosts": {
                            h: _address(*a) for h, a in intercept.upstream_hosts.items()
                        },
                    },
                },
                indent=2,
                default=str,
            )
        )
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
        overrides = {
            k: v for k, v in _policy_summary(policies[app]).items() if k in config.apps[app]
        }
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
    unset, kept = config.register.unset, _register_set(config)
    if not kept:
        print("  register: nothing set (the register flags every field)")
    else:
        missing = f"; not set: {', '.join(unset)} (the register flags them)" if unset else ""
        print(f"  register: {', '.join(kept)}{missing}")
    c = _console_summary(config)
    subjects = c["show_subjects"]
    print(
        f"  console: {c['host']}:{c['port']}, allow_remote {str(c['allow_remote']).lower()}, "
        f"{plural(len(c['users']), 'user')}"
        + (f", public_url {c['public_url']}" if c["public_url"] else "")
        + ", subjects "
        + (
            "shown"
            if subjects is True
            else f"shown to {', '.join(subjects)}"
            if subjects
            else "sealed"
        )
    )
    return EXIT_OK


def _register_set(config: Config) -> list[str]:
    """The [register] keys that are set (the rest: ``config.register.unset``)."""
    return [k for k in REGISTER_KEYS if k not in config.register.unset]


def _console_summary(config: Config) -> dict[str, Any]:
    """[console] without the password hashes (their user names only)."""
    c = config.console
    return {
        "host": c.host,
        "port": c.port,
        "allow_remote": c.allow_remote,
        "public_url": c.public_url,
        "users": sorted(c.users),
        "show_subjects": sorted(c.show_subjects)
        if isinstance(c.show_subjects, frozenset)
        else c.show_subjects,
    }


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
