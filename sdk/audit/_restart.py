"""Starting a transfer log over, on the record: ``veilpix audit restart``.

A writer refuses a log that does not match its key file (missing, emptied, cut back, or
holding entries written without the key). Nothing is ever started over silently: this is the
one way on, and it leaves a trace that cannot be left out.

1. The log is opened as a writer would; only a log that writer refuses with
   :class:`~veilpix.LogIntegrityError` is restarted (an intact one is not).
2. Its files are moved aside, never deleted: ``audit.db`` becomes
   ``audit.db.abandoned-<UTC time>`` (its ``-wal`` and ``-shm`` with it, so the moved copy
   still opens, and any ``-finishes`` set aside for it), for investigation; ``veilpix audit verify --log`` on it still works, with
   the same key file.
3. The key file keeps its secrets (the exported public key stays valid) and gets a new log id;
   the old id goes to its ``previous`` list, and the restart statement waits in it.
4. The new log is created, and its first entry is the statement, signed at once: the old
   log's id and last recorded state, what was found, the reason given, and where the old
   file went. ``veilpix audit verify`` shows it on every run.

Stop every writer of the log first: a writer still running notices its file was moved and
refuses to write (the calls it would record are not sent).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veilpix._config import default_log_path
from veilpix._errors import AuditLogError, ConfigError, LogIntegrityError
from veilpix.audit._keys import KeyFile
from veilpix.audit._log import AuditLog
from veilpix.audit._store import key_path_for

__all__ = ["Restarted", "restart_log"]

_SIDECARS = ("", "-wal", "-shm", "-finishes")  # the log, SQLite's files, set-aside finishes
_REASON_MAX = 2000


@dataclass(frozen=True)
class Restarted:
    """What :func:`restart_log` did."""

    path: str
    log_id: str
    previous_log: str
    found: str
    detail: str
    moved_to: str | None
    statement: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def restart_log(
    path: str | os.PathLike[str] | None = None,
    *,
    reason: str,
    key_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1000,
    clock: Callable[[], datetime] | None = None,
) -> Restarted:
    """Start the log at ``path`` over, because ``reason`` (kept in the log); see the module
    docstring. Raises :class:`~veilpix.AuditLogError` when the key file is missing or the log
    is intact (there is nothing to restart from)."""
    reason = " ".join(reason.split())
    if not reason:
        raise ConfigError("a restart needs a reason", hint='say why: --reason "disk replaced"')
    if len(reason) > _REASON_MAX:
        raise ConfigError(f"the reason is longer than {_REASON_MAX} characters")
    log_path = Path(path).expanduser() if path is not None else default_log_path()
    chosen = key_path if key_path is not None else os.environ.get("VEILPIX_LOG_KEY") or None
    keys_at = Path(chosen).expanduser() if chosen is not None else key_path_for(log_path)
    if not keys_at.is_file():
        raise AuditLogError(
            f"a restart needs the log's key file, and there is none at {str(keys_at)!r}",
            hint="pass --key; without the key file, start a new log elsewhere with --log",
        )
    keys = KeyFile.read(keys_at)
    if keys.restart is not None:  # an earlier restart stopped half-way: finish that one
        AuditLog(log_path, key_path=keys_at, checkpoint_every=checkpoint_every, clock=clock).close()
        return _done(log_path, keys.log_id, keys.restart)
    found, detail = _diagnose(log_path, keys_at, keys)
    when = (clock or (lambda: datetime.now(UTC)))().astimezone(UTC)
    now = when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    moved = _move_aside(log_path, when) if log_path.exists() else None
    statement: dict[str, Any] = {
        "previous_log": keys.log_id,
        "previous_state": keys.state,
        "found": found,
        "detail": detail,
        "reason": reason,
        "moved_to": None if moved is None else moved.name,
        "at": now,
    }
    new_id = str(uuid.uuid4())
    keys.evolve(
        log_id=new_id,
        previous=(*keys.previous, keys.log_id),
        state=None,
        restart=statement,
    ).save(keys_at)
    AuditLog(log_path, key_path=keys_at, checkpoint_every=checkpoint_every, clock=clock).close()
    return _done(log_path, new_id, statement)


def _done(log_path: Path, log_id: str, statement: dict[str, Any]) -> Restarted:
    moved = statement.get("moved_to")
    return Restarted(
        path=str(log_path),
        log_id=log_id,
        previous_log=str(statement.get("previous_log")),
        found=str(statement.get("found")),
        detail=str(statement.get("detail")),
        moved_to=None if moved is None else str(log_path.with_name(str(moved))),
        statement=statement,
    )


def _diagnose(log_path: Path, keys_at: Path, keys: KeyFile) -> tuple[str, str]:
    """(what was found, the writer's words) for a log a writer refuses; AuditLogError for one
    it accepts, or refuses for a reason a restart does not mend."""
    if not log_path.exists():
        if keys.state is None:
            raise AuditLogError(
                f"there is no transfer log at {str(log_path)!r}, and its key file never "
                "recorded one: there is nothing to restart",
                hint="any command that writes the log creates it",
            )
        return "missing", f"the log {str(log_path)!r} does not exist"
    try:
        AuditLog(log_path, key_path=keys_at).close()
    except LogIntegrityError as exc:
        return exc.found, exc.message
    raise AuditLogError(
        f"the transfer log {str(log_path)!r} is intact and matches its key file: there is "
        "nothing to restart from",
        hint="for a separate new log, pass another --log path",
    )


def _move_aside(log_path: Path, when: datetime) -> Path:
    """Rename the log's files to ``<name>.abandoned-<time>`` (plus ``-wal``, ``-shm``) without
    replacing anything: each is hard-linked to its new name first, and only then unlinked."""
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    target = log_path.with_name(f"{log_path.name}.abandoned-{stamp}")
    pairs = [
        (log_path.with_name(log_path.name + s), target.with_name(target.name + s))
        for s in _SIDECARS
    ]
    pairs = [(src, dst) for src, dst in pairs if src.exists()]
    try:
        for src, dst in pairs:
            os.link(src, dst)
    except FileExistsError as exc:
        raise AuditLogError(
            f"cannot move the old log aside: {str(exc.filename2 or target)!r} exists",
            hint="wait a second and run the restart again",
        ) from exc
    except OSError as exc:
        raise AuditLogError(f"cannot move the old log aside: {exc}") from exc
    for src, _dst in pairs:
        src.unlink()
    return target
