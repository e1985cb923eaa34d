"""``veilpix audit serve``: the compliance console (:mod:`veilpix.console`) on this machine.

It prints the console's address and a one-time login link, then serves until Ctrl+C.
Press Enter for a new login link (each works once). ``--hash-password`` prints the line
for a ``[console.users]`` entry instead and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import signal
import sys
import threading
import time
from types import FrameType

from veilpix._config import load_config
from veilpix._errors import ConfigError
from veilpix._passwords import hash_password
from veilpix.audit._log import AuditLog
from veilpix.cli._audit_review import dump, open_log
from veilpix.cli._exit import EXIT_OK
from veilpix.cli._term import Term, json_text, styled, visible
from veilpix.console._app import Console, Settings
from veilpix.console._serve import check_address, start

__all__ = ["serve"]


def _hash(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        first = getpass.getpass("password for the console user: ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("the two passwords differ; nothing printed")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    hashed = hash_password(first)
    if args.json:
        dump({"hash": hashed})
    else:
        print(f'"{hashed}"')
        Term(sys.stderr).print(
            'put it under [console.users] in veilpix.toml, e.g.  alice = "scrypt$..."'
        )
    return EXIT_OK


def access_text(method: str, path: str, status: int) -> str:
    """One request as an access line: time, method, path (the server never passes the query:
    a login link holds a token), status; control characters shown escaped."""
    return f"{time.strftime('%H:%M:%S')} {visible(method)} {visible(path)} {status}"


def access_line(method: str, path: str, status: int) -> None:
    print(access_text(method, path, status), file=sys.stderr)


def serve(args: argparse.Namespace) -> int:
    if args.hash_password:
        return _hash(args)
    config = load_config(args.config)
    cfg = config.console
    host = args.host or cfg.host
    port = cfg.port if args.port is None else args.port
    allow_remote = args.allow_remote or cfg.allow_remote
    public_url = cfg.public_url
    behind_tls = args.tls_cert is not None or (public_url or "").startswith("https://")
    warning = check_address(host, allow_remote=allow_remote, users=len(cfg.users), tls=behind_tls)
    log = open_log(args)
    if args.allow_changes and log.keys is None:
        log.close()
        raise ConfigError(
            "--allow-changes needs the log's key file: the console writes every action to the log",
            hint=f"none readable at {str(log.key_path)!r}: pass --key FILE",
        )

    def writer() -> AuditLog:
        return open_log(args, write=True)

    settings = Settings(
        changes=args.allow_changes,
        show_subjects=cfg.show_subjects,
        users=cfg.users,
        public_url=public_url,
        config_path=args.config,
        register=config.register,
        log_retention=config.log.retention,
        open_writer=writer,
    )
    console = Console(log, settings)
    running = start(
        console,
        host=host,
        port=port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        access_log=access_line if args.access_log else None,
    )
    err = Term(sys.stderr)
    if warning:
        err.print(styled(warning, "bold", "yellow"))
    if args.json:
        # one line, printed once the console listens: a script reads it and goes
        line = {"url": running.url, "login_url": running.login_url(), "log": log.location}
        print(json_text(line), flush=True)
    else:
        out = Term()
        mode = "changes allowed (every action is recorded)" if args.allow_changes else "read-only"
        out.print(styled("veilpix console", "bold"), f" for {log.location} ({mode})")
        out.print("  open: ", styled(running.login_url(), "bold"))
        out.print(
            "  the link signs in once; press Enter for a new one, Ctrl+C to stop"
            if sys.stdin.isatty()
            else "  the link signs in once; Ctrl+C to stop"
        )
        sys.stdout.flush()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    if sys.stdin.isatty() and not args.json:
        threading.Thread(target=_new_links, args=(running, stop), daemon=True).start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        with contextlib.suppress(Exception):
            log.close()
    err.print("console stopped")
    return EXIT_OK


def _new_links(running: object, stop: threading.Event) -> None:
    from veilpix.console._serve import Running  # noqa: PLC0415

    assert isinstance(running, Running)
    while not stop.is_set():
        line = sys.stdin.readline()
        if not line:  # stdin closed
            return
        print("  new login link: " + running.login_url(), flush=True)
        time.sleep(0.2)
