"""The chain primitives the writer and the verifier share: what is hashed and what is signed.

An entry's hash covers the previous entry's hash, its sequence number, kind, record id, time,
subject key id and canonical JSON body (:func:`entry_hash`); a checkpoint's Ed25519 signature
covers the head it signs and the previous checkpoint's signature
(:func:`checkpoint_message`); the founding signature covers the log's id and checkpoint
interval (:func:`founding_statement`). Each message starts with its own domain string, so no
signature or hash can be taken for another. Nothing here touches a file or a key.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "KINDS",
    "Kind",
    "canonical",
    "checkpoint_message",
    "entry_hash",
    "founding_statement",
    "genesis",
    "now_text",
]

# review: what a reviewer did to or with the log (the console's actions, erase and resolve)
Kind = Literal["begin", "finish", "erase", "prune", "restart", "review"]
KINDS: tuple[Kind, ...] = ("begin", "finish", "erase", "prune", "restart", "review")

_ENTRY_DOMAIN = b"veilpix-audit-entry/1\0"
_CHECKPOINT_DOMAIN = b"veilpix-audit-checkpoint/1\0"
_FOUNDING_DOMAIN = b"veilpix-audit-founding/1\0"
_GENESIS_DOMAIN = b"veilpix-audit-genesis\0"

# json.dumps with these options would build an encoder per call; one is enough (it keeps no
# state between calls).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical(obj: Any) -> str:
    """The one JSON text of ``obj`` that is hashed: sorted keys, no spaces, UTF-8."""
    return _CANONICAL.encode(obj)


def genesis(log_id: str) -> bytes:
    """The ``prev`` of the first entry and the ``prev`` signature of the first checkpoint."""
    return hashlib.sha256(_GENESIS_DOMAIN + log_id.encode()).digest()


def entry_hash(  # noqa: PLR0917 - one argument per hashed column
    prev: bytes, seq: int, kind: str, record: str | None, ts: str, subject: str | None, body: str
) -> bytes:
    fields = canonical([seq, kind, record, ts, subject, body]).encode()
    return hashlib.sha256(_ENTRY_DOMAIN + prev + fields).digest()


def founding_statement(log_id: str, every: int, created: str) -> bytes:
    """What the signature made when a log is created covers: its id and its checkpoint
    interval. Verify trusts the interval only through this signature, so nobody can claim a
    log that "never needed" the checkpoints they deleted."""
    doc = {"log": log_id, "checkpoint_every": every, "created": created}
    return _FOUNDING_DOMAIN + canonical(doc).encode()


def checkpoint_message(  # noqa: PLR0917 - one argument per signed field
    log_id: str, cp_id: int, seq: int, head: bytes, ts: str, reason: str, prev_sig: bytes
) -> bytes:
    """What a checkpoint's Ed25519 signature covers. ``prev_sig`` is SHA-256 of the previous
    checkpoint's signature (genesis for the first), so checkpoints form a chain of their own."""
    doc = {
        "log": log_id,
        "id": cp_id,
        "seq": seq,
        "head": head.hex(),
        "ts": ts,
        "reason": reason,
        "prev": prev_sig.hex(),
    }
    return _CHECKPOINT_DOMAIN + canonical(doc).encode()


def now_text(now: datetime) -> str:
    """The time as entries and checkpoints store it: ``2026-11-26T12:45:00.123456Z`` (what
    strftime("%Y-%m-%dT%H:%M:%S.%fZ") gives, faster). Stored times sort as text."""
    return now.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
