"""The bodies of the log's entries, typed: version 1 of what a ``begin``, ``finish``,
``erase``, ``prune`` and ``review`` entry holds, and :class:`Finish`, how a transfer ended.

A body is stored as canonical JSON (sorted keys, see :func:`veilpix.audit._chain.canonical`)
and hashed into the chain, so these types describe the stored bytes exactly: a key added,
renamed or dropped here changes every hash written from then on. A ``begin`` body has the
sections ``who``, ``what``, ``where``, ``why``, ``controls`` and ``headers``; the fields
linked to a data subject (:class:`Linked`) are sealed under the subject's key, or, for a
transfer without a subject, written in the clear into ``what``. At run time the bodies are
plain dicts: these are :class:`typing.TypedDict` types, read back by
:mod:`veilpix.audit._records`.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from veilpix._errors import ConfigError

__all__ = [
    "BODY_VERSION",
    "BeginBody",
    "Controls",
    "EraseBody",
    "Finish",
    "FinishBody",
    "ImageEntry",
    "Late",
    "Linked",
    "Outcome",
    "Prompt",
    "PruneBody",
    "ReviewBody",
    "What",
    "Where",
    "Who",
    "Why",
    "blocked_body",
    "login_name",
    "well_formed",
]

BODY_VERSION: Literal[1] = 1  # the "v" of a begin body
Outcome = Literal["sent", "failed", "blocked"]  # of a finish ("unknown": no finish yet)


class Who(TypedDict):
    app: str | None
    actor: str | None
    client: str | None
    door: str


class ImageEntry(TypedDict, total=False):
    """One image: sizes, formats, what was found and done (``error`` when it was not sent);
    the keyed fingerprints only when no subject is linked (otherwise they are sealed)."""

    field: str
    bytes_before: int
    filename: str
    error: str
    format_before: str
    format_after: str
    media_type: str
    width_before: int
    height_before: int
    width_after: int
    height_after: int
    frames: int
    bytes_after: int
    lossless: bool
    metadata_found: dict[str, int]
    gps_removed: bool
    metadata_removed: dict[str, int]
    faces_checked: bool
    faces_found: int | None
    faces_blurred: int
    faces_unblurred: int | None
    face_mode: str
    downscaled: bool
    fingerprint_before: str | None
    fingerprint_after: str | None


class Prompt(TypedDict):
    length: int
    fingerprint: NotRequired[str]  # no subject linked (else sealed)
    sealed: NotRequired[str]  # encrypt_prompts, no subject linked (else sealed)


class What(TypedDict):
    categories: list[str]
    images: list[ImageEntry]
    image_count: int
    bytes_before: int
    bytes_after: int
    request_bytes: int | None
    prompt: Prompt | None


class Where(TypedDict):
    vendor: str
    legal_entity: str | None
    model: str | None
    operation: str | None
    method: str
    url: str
    host: str
    region: str | None
    country: str | None
    transfer_mechanism: str | None


class Why(TypedDict):
    purpose: str | None
    legal_basis: str | None
    consent: bool
    consent_ref: str | None  # None when a subject is linked (then sealed)
    subject_ref: None  # always sealed


class Controls(TypedDict):
    applied: list[str]
    account_level: list[str]
    unavailable: list[str]


class BeginBody(TypedDict):
    """The body of a ``begin`` entry."""

    v: Literal[1]
    who: Who
    what: What
    where: Where
    why: Why
    controls: Controls
    headers: dict[str, str]  # credentials redacted
    rule: str | None
    retention: str | None
    sealed: NotRequired[str]  # Linked, sealed under the subject's key (hex)


class Linked(TypedDict):
    """The fields linked to a data subject: sealed into the begin body when a subject is
    named (and unreadable once the subject is erased), else written into ``what``."""

    fingerprints: list[list[str | None]]  # (before, after) per image
    prompt_fingerprint: NotRequired[str]
    prompt_text: NotRequired[str]  # encrypt_prompts
    subject_ref: NotRequired[str | None]
    consent_ref: NotRequired[str | None]


class Late(TypedDict):
    """On a finish written after its time: since when and why the log could not take it."""

    since: str
    why: str


class FinishBody(TypedDict):
    """The body of a ``finish`` entry (a blocked call's has ``rule`` and no sizes)."""

    outcome: Outcome
    status: int | None
    reason: str | None
    response_bytes: NotRequired[int | None]
    request_bytes: NotRequired[int | None]
    vendor_request_id: NotRequired[str | None]
    latency_ms: NotRequired[float | None]
    rule: NotRequired[str]
    late: NotRequired[Late]


class EraseBody(TypedDict):
    """The tombstone of a subject erasure."""

    subject_key: str
    records: int
    request_ref: str | None


class ReviewBody(TypedDict):
    """What a reviewer did: ``action`` (erase, resolve, verify, export, ...), ``by`` (who, as
    the console or the command knew them), ``via`` (console or cli) and the action's facts.
    Never a subject reference or a credential: facts are counts, ids and request refs."""

    action: str
    by: str
    via: str
    facts: dict[str, Any]


class PruneBody(TypedDict):
    """The bridge over a retention cut: the chain goes on from ``anchor``, the hash of entry
    ``through``."""

    through: int
    anchor: str
    entries: int
    records: int
    cutoff: str
    older_than: str


@dataclass(frozen=True)
class Finish:
    """How a transfer ended, as the door reports it: the facts of its ``finish`` entry.

    ``outcome="sent"`` means the request left (whatever the HTTP status); ``failed`` that it
    may not have arrived (connection error, timeout); ``blocked`` that policy stopped it."""

    outcome: Outcome = "sent"
    status: int | None = None
    response_bytes: int | None = None
    request_bytes: int | None = None
    reason: str | None = None
    vendor_request_id: str | None = None
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in ("sent", "failed", "blocked"):
            raise ConfigError(f"outcome must be sent, failed or blocked, not {self.outcome!r}")

    def body(self) -> FinishBody:
        latency = self.latency_ms
        return {
            "outcome": self.outcome,
            "status": self.status,
            "response_bytes": self.response_bytes,
            "request_bytes": self.request_bytes,
            "reason": self.reason,
            "vendor_request_id": self.vendor_request_id,
            "latency_ms": None if latency is None else round(latency, 3),
        }


def blocked_body(reason: str, rule: str) -> FinishBody:
    """The finish of a call policy stopped before sending (written with its begin)."""
    return {"outcome": "blocked", "reason": reason, "rule": rule, "status": None}


def login_name() -> str:
    """Who runs this process, as a review entry's ``by`` names a person at the machine: the
    login name (``uid N`` where the system has none, as in some containers)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def well_formed(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (which JSON's ``\\ud800`` can put in a
    request's text) becomes "?" instead of failing the record of the call."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()
    return text
