"""Transfers as read back from the log: :class:`TransferRecord` (a ``begin`` and, once known,
its ``finish``), what an erasure or a prune did, and the per vendor, country and month totals
of ``veilpix audit stats`` and the register (:func:`summarize`).

Stored bodies are parsed with :func:`load_body`, which refuses shapes veilpix never writes:
a row changed behind veilpix's back gives a clear error here, not a traceback deep in a
report. The SQL that selects records and counts entries is here too; the log runs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from veilpix._errors import AuditLogError
from veilpix.audit._entry import BeginBody, FinishBody, Linked, What, Where, Who, Why
from veilpix.audit._keys import KeyFile, SealError, open_sealed

__all__ = [
    "COUNTS",
    "FACT_PATHS",
    "SELECT_CHAIN_ENTRIES",
    "SELECT_FACTS",
    "SELECT_FACTS_GUARDED",
    "SELECT_IMAGE_CANDIDATES",
    "SELECT_RECORDS",
    "SQLITE",
    "ChainEntry",
    "Erasure",
    "Pruned",
    "Queries",
    "StatsRow",
    "SubjectState",
    "Summary",
    "TransferRecord",
    "fingerprints_of",
    "load_body",
    "record_filters",
    "sealed_fingerprints",
    "sealed_view",
    "subject_key",
    "summarize",
    "to_record",
    "unseal_subject",
]

# none: no subject linked; open: linked, sealed fields opened; sealed: linked, no key file at
# hand; erased: the subject's key was destroyed
SubjectState = Literal["none", "open", "sealed", "erased"]


@dataclass(frozen=True)
class TransferRecord:
    """One transfer as read back: the ``begin`` facts and, once known, the ``finish`` facts.

    ``outcome`` is ``sent``, ``failed``, ``blocked`` or ``unknown`` (begun, never finished:
    the process died or is still waiting for the vendor). ``subject`` is ``none`` (no subject
    linked), ``open`` (linked; sealed fields decrypted), ``sealed`` (linked; no key file at
    hand) or ``erased`` (the subject's key was destroyed; those fields are gone).
    """

    id: str
    seq: int
    begun: str
    begin: BeginBody
    finished: str | None = None
    finish: FinishBody | None = None
    subject: str = "none"
    sealed: Linked | None = None

    @property
    def outcome(self) -> str:
        return "unknown" if self.finish is None else str(self.finish.get("outcome", "unknown"))

    @property
    def where(self) -> Where:
        return self.begin.get("where", {})

    @property
    def what(self) -> What:
        return self.begin.get("what", {})

    @property
    def who(self) -> Who:
        return self.begin.get("who", {})

    @property
    def why(self) -> Why:
        return self.begin.get("why", {})

    @property
    def month(self) -> str:
        return self.begun[:7]

    @property
    def faces_unblurred(self) -> int:
        return sum(int(i.get("faces_unblurred") or 0) for i in self.what.get("images", ()))

    @property
    def faces_unchecked(self) -> int:
        """Images sent without a face check (their faces, if any, are not counted)."""
        return sum(1 for i in self.what.get("images", ()) if i.get("faces_checked") is False)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON shape used by ``--json``, JSON Lines export and the HTML report."""
        b, f = self.begin, self.finish or cast("FinishBody", {})
        why: dict[str, Any] = dict(self.why)
        images: list[dict[str, Any]] = [dict(i) for i in self.what.get("images", ())]
        if self.sealed is not None:
            why["subject_ref"] = self.sealed.get("subject_ref")
            why["consent_ref"] = self.sealed.get("consent_ref")
            for img, fps in zip(images, self.sealed.get("fingerprints", ()), strict=False):
                img["fingerprint_before"], img["fingerprint_after"] = fps
        elif self.subject in ("sealed", "erased"):
            why["subject_ref"] = why["consent_ref"] = f"[{self.subject}]"
        what: dict[str, Any] = dict(self.what, images=images)
        if self.sealed is not None and self.sealed.get("prompt_fingerprint"):
            prompt = dict(what.get("prompt") or {})
            what["prompt"] = dict(prompt, fingerprint=self.sealed["prompt_fingerprint"])
        return {
            "id": self.id,
            "seq": self.seq,
            "begun": self.begun,
            "finished": self.finished,
            "outcome": self.outcome,
            "status": f.get("status"),
            "reason": f.get("reason"),
            "rule": f.get("rule") or b.get("rule"),
            "latency_ms": f.get("latency_ms"),
            "request_bytes": f.get("request_bytes") or self.what.get("request_bytes"),
            "response_bytes": f.get("response_bytes"),
            "vendor_request_id": f.get("vendor_request_id"),
            "who": dict(self.who),
            "what": what,
            "where": dict(self.where),
            "why": why,
            "subject": self.subject,
            "controls": dict(b.get("controls", {})),
            "headers": dict(b.get("headers", {})),
            "retention": b.get("retention"),
        }


@dataclass(frozen=True)
class Erasure:
    """What ``AuditLog.erase`` did: records whose subject-linked fields are now unreadable."""

    records: int
    tombstone_seq: int | None
    physically_overwritten: bool


@dataclass(frozen=True)
class Pruned:
    """What ``AuditLog.prune`` removed, and the prune entry that bridges the cut."""

    entries: int
    records: int
    through_seq: int | None
    cutoff: str
    prune_seq: int | None


@dataclass
class StatsRow:
    """Totals for one (vendor, country, month): what ``veilpix audit stats`` prints."""

    vendor: str
    country: str
    month: str
    calls: int = 0
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    unknown: int = 0
    images: int = 0
    bytes_before: int = 0
    bytes_sent: int = 0
    faces_blurred: int = 0
    faces_unblurred: int = 0
    images_unchecked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Summary:
    """The totals of :func:`summarize`, added up one record at a time (:meth:`add`), so a
    caller can stream a log through it without holding the records."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], StatsRow] = {}

    def add(self, rec: TransferRecord) -> None:
        key = (str(rec.where.get("vendor") or "?"), str(rec.where.get("country") or "?"), rec.month)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = StatsRow(*key)
        row.calls += 1
        outcome = rec.outcome
        if outcome not in ("sent", "blocked", "failed", "unknown"):
            outcome = "unknown"  # (a finish veilpix did not write: verify names it)
        setattr(row, outcome, getattr(row, outcome) + 1)
        if outcome == "blocked":
            return
        images = rec.what.get("images", ())
        row.images += len(images)
        row.bytes_before += int(rec.what.get("bytes_before") or 0)
        finished = rec.finish.get("request_bytes") if rec.finish is not None else None
        sent = finished or rec.what.get("request_bytes")
        row.bytes_sent += int(sent or rec.what.get("bytes_after") or 0)
        row.faces_blurred += sum(int(i.get("faces_blurred") or 0) for i in images)
        row.faces_unblurred += rec.faces_unblurred
        row.images_unchecked += rec.faces_unchecked

    def rows(self) -> list[StatsRow]:
        return [self._rows[k] for k in sorted(self._rows, key=lambda k: (k[2], k[0], k[1]))]


def summarize(records: Iterable[TransferRecord]) -> list[StatsRow]:
    """Per vendor, destination country and month (of the begin): calls by outcome, images,
    bytes before and as sent, faces blurred and sent unblurred, images sent unchecked.
    Blocked calls count as calls but send no images or bytes."""
    summary = Summary()
    for rec in records:
        summary.add(rec)
    return summary.rows()


# -- reading the rows --------------------------------------------------------------------------

_SECTIONS = ("who", "what", "where", "why", "controls", "headers")

# begin entries with their finish, if any: (seq, record, ts, subject, body, finish ts, body)
SELECT_RECORDS = (
    "SELECT b.seq, b.record, b.ts, b.subject, b.body, f.ts, f.body FROM entries b"
    " LEFT JOIN entries f ON f.record=b.record AND f.kind='finish'"
)
COUNTS = {
    "entries": "SELECT count(*) FROM entries",
    "records": "SELECT count(*) FROM entries WHERE kind='begin'",
    "pending": "SELECT count(*) FROM entries b WHERE b.kind='begin' AND NOT EXISTS"
    " (SELECT 1 FROM entries f WHERE f.record=b.record AND f.kind='finish')",
    "checkpoints": "SELECT count(*) FROM checkpoints",
    "subjects": "SELECT count(*) FROM subject_keys",
    "erasures": "SELECT count(*) FROM entries WHERE kind='erase'",
    "prunes": "SELECT count(*) FROM entries WHERE kind='prune'",
}


# Begins that may hold an image fingerprint (bound twice): (seq, record, subject key id,
# whether the fingerprint is in the clear, the sealed fields' hex), newest first
SELECT_IMAGE_CANDIDATES = (
    "SELECT seq, record, subject, instr(body, ?) > 0,"
    " CASE WHEN subject IS NOT NULL AND json_valid(body) THEN json_extract(body, '$.sealed') END"
    " FROM entries WHERE kind='begin' AND (instr(body, ?) > 0 OR subject IS NOT NULL)"
    " ORDER BY seq DESC"
)

# What a summary of the log needs from each entry, pulled out by SQLite in one pass over the
# body (a begin's facts; a finish's outcome, sizes and rule). The first image's faces come
# with it; a begin with more images also gets them all (the CASE keeps json_each off the
# common one-image path).
FACT_PATHS = (
    "$.where.vendor",
    "$.where.country",
    "$.where.host",
    "$.where.transfer_mechanism",
    "$.who.app",
    "$.who.door",
    "$.why.purpose",
    "$.why.legal_basis",
    "$.rule",
    "$.what.image_count",
    "$.what.request_bytes",
    "$.what.bytes_after",
    "$.what.bytes_before",
    "$.what.images[0].faces_blurred",
    "$.what.images[0].faces_unblurred",
    "$.what.images[0].faces_checked",
    "$.outcome",
    "$.request_bytes",
)
# (seq, kind, record, ts, has a subject, facts as a JSON array in FACT_PATHS order, every
# image's [blurred, unblurred, checked] as a JSON array when there are several, else NULL)
# (built from the constant paths above: no input reaches it)
SELECT_FACTS = (
    "SELECT seq, kind, record, ts, subject IS NOT NULL, json_extract(body, "  # noqa: S608
    + ", ".join(f"'{p}'" for p in FACT_PATHS)
    + "), CASE WHEN kind='begin' AND json_extract(body, '$.what.image_count') > 1 THEN"
    " (SELECT json_group_array(json_array(json_extract(value, '$.faces_blurred'),"
    " json_extract(value, '$.faces_unblurred'), json_extract(value, '$.faces_checked')))"
    " FROM json_each(body, '$.what.images')) END"
    " FROM entries WHERE seq > ? ORDER BY seq LIMIT ?"
)
# The same, for a chunk where SQLite found a body that is not JSON (altered: verify names
# it): such a body reads as {}, so its entry still counts, with no facts.
SELECT_FACTS_GUARDED = SELECT_FACTS.replace(
    "FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
    "FROM (SELECT seq, kind, record, ts, subject, CASE WHEN json_valid(body) THEN body"
    " ELSE '{}' END AS body FROM entries WHERE seq > ? ORDER BY seq LIMIT ?)",
)


@dataclass(frozen=True)
class ChainEntry:
    """One entry of a transfer as it sits in the chain: its position, kind, time, hash and
    the newest checkpoint covering it (None: not signed yet)."""

    seq: int
    kind: str
    ts: str
    hash: bytes
    prev: bytes
    checkpoint: int | None
    checkpoint_ts: str | None
    writer: int | None = None  # a fleet log's: whose chain it is in


SELECT_CHAIN_ENTRIES = (
    "SELECT e.seq, e.kind, e.ts, e.hash, e.prev, c.id, c.ts FROM entries e"
    " LEFT JOIN checkpoints c ON c.id = (SELECT min(id) FROM checkpoints WHERE seq >= e.seq)"
    " WHERE e.record = ? ORDER BY e.seq"
)


def record_filters(
    *,
    since: str | None,
    until: str | None,
    vendor: str | None,
    host: str | None,
    country: str | None,
    outcome: str | None,
    app: str | None,
    field: Callable[[str, str], str] = lambda row, path: f"json_extract({row}.body, '$.{path}')",
    mark: str = "?",
    finish_key: str = "f.seq",
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (after ``SELECT_RECORDS ... WHERE b.kind='begin'``) and their
    arguments for the filters of :meth:`AuditLog.records` that SQL can apply. ``field(row,
    path)`` is the dialect's expression for a body field (SQLite's by default), ``mark`` its
    parameter mark, ``finish_key`` a column of the finish that is NULL when there is none."""
    sql: list[str] = []
    args: list[Any] = []
    for value, clause in (
        (since, f"b.ts >= {mark}"),
        (until, f"b.ts < {mark}"),
        (vendor, f"lower({field('b', 'where.vendor')}) = lower({mark})"),
        (host, f"{field('b', 'where.host')} = lower({mark})"),
        (country, f"{field('b', 'where.country')} = upper({mark})"),
        (app, f"{field('b', 'who.app')} = {mark}"),  # app names are the operator's own
    ):
        if value is not None:
            sql.append(f"AND {clause}")
            args.append(value)
    if outcome is not None:
        if outcome == "unknown":
            sql.append(f"AND {finish_key} IS NULL")
        else:
            sql.append(f"AND {field('f', 'outcome')} = {mark}")
            args.append(outcome)
    return sql, args


@dataclass(frozen=True)
class Queries:
    """What the transfer log's readers ask its storage, in the storage's SQL: the file log's
    (:data:`SQLITE`) and the fleet log's (:mod:`veilpix.audit.fleet._sql`). Rows come back
    in the same shapes, so the readers (:class:`veilpix.AuditLog`) are written once.

    ``records``: ``SELECT_RECORDS`` of begins, open for ``AND`` clauses; ``position``: the
    column that orders them (a record's ``seq``); ``at(seqs)``: the records at those
    positions (SQL, arguments); ``mark``: the parameter mark; ``field(row, path)``: a body
    field."""

    records: str
    position: str
    by_id: str
    after: str
    at: Callable[[Sequence[int]], tuple[str, Sequence[Any]]]
    image_candidates: str
    chain_entries: str
    reviews: str
    subject_kid: str
    wrapped: str
    counts: Mapping[str, str]
    mark: str
    field: Callable[[str, str], str]
    finish_key: str

    def filters(self, **values: Any) -> tuple[list[str], list[Any]]:
        return record_filters(
            **values, field=self.field, mark=self.mark, finish_key=self.finish_key
        )


def _in(seqs: Sequence[int]) -> tuple[str, Sequence[Any]]:
    marks = ",".join("?" * len(seqs))
    # (+b.kind: look the seqs up by the primary key, not the kind index)
    return SELECT_RECORDS + f" WHERE +b.kind='begin' AND b.seq IN ({marks})", list(seqs)


# The file log's readers' SQL. (+b.kind: walk the primary key in log order and stop at the
# limit; on the kind index SQLite joins and sorts every begin first, seconds on a million.)
SQLITE = Queries(
    records=SELECT_RECORDS + " WHERE +b.kind='begin'",
    position="b.seq",
    by_id=SELECT_RECORDS + " WHERE b.record >= ? AND b.record < ? AND +b.kind='begin' LIMIT 2",
    after=SELECT_RECORDS + " WHERE +b.kind='begin' AND b.seq > ? ORDER BY b.seq LIMIT ?",
    at=_in,
    image_candidates=SELECT_IMAGE_CANDIDATES,
    chain_entries=SELECT_CHAIN_ENTRIES,
    reviews="SELECT seq, ts, body FROM entries WHERE kind='review' ORDER BY seq DESC LIMIT ?",
    subject_kid="SELECT kid FROM subject_keys WHERE tag=?",
    wrapped="SELECT wrapped FROM subject_keys WHERE kid=?",
    counts=COUNTS,
    mark="?",
    field=lambda row, path: f"json_extract({row}.body, '$.{path}')",
    finish_key="f.seq",
)


def load_body(text: str, rid: str, *, begin: bool) -> dict[str, Any]:
    """Parse a stored body, refusing shapes veilpix never writes (a tampered row must give a
    clear error, not a traceback deep inside a report)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    ok = isinstance(body, dict)
    if ok and begin:
        ok = all(isinstance(body.get(k, {}), dict) for k in _SECTIONS)
        images = body.get("what", {}).get("images", []) if ok else None
        ok = ok and isinstance(images, list) and all(isinstance(i, dict) for i in images)
    if not ok:
        raise AuditLogError(
            f"transfer {rid} holds a record veilpix did not write (damaged or altered)",
            hint="run: veilpix audit verify, which names the entry",
        )
    return body  # type: ignore[no-any-return]


def to_record(
    row: Sequence[Any],
    open_subject: Callable[[str, str, Mapping[str, Any]], tuple[SubjectState, Linked | None]],
) -> TransferRecord:
    """The record of a ``SELECT_RECORDS`` row. ``open_subject(record id, subject key id,
    body)`` gives the state of its subject and, when they open, the sealed fields."""
    seq, rid, ts, kid, body_text, fts, fbody = row
    body = load_body(body_text, rid, begin=True)
    subject, linked = ("none", None) if kid is None else open_subject(rid, kid, body)
    return TransferRecord(
        id=rid,
        seq=seq,
        begun=ts,
        begin=cast("BeginBody", body),
        finished=fts,
        finish=None if fbody is None else cast("FinishBody", load_body(fbody, rid, begin=False)),
        subject=subject,
        sealed=linked,
    )


def subject_key(wrapped: bytes | None, keys: KeyFile | None, kid: str) -> bytes | None:
    """Subject key ``kid`` unwrapped (None: erased, no key file, or it does not open)."""
    if wrapped is None or keys is None:
        return None
    try:
        return open_sealed(keys.wrap_key, wrapped, b"subject-key:" + kid.encode())
    except SealError:
        return None


def sealed_fingerprints(key: bytes | None, rid: str, sealed: object) -> set[str]:
    """The image fingerprints sealed in a begin body (``sealed``: its hex) under subject
    ``key``; empty when they do not open."""
    if key is None or not isinstance(sealed, str):
        return set()
    try:
        linked = json.loads(open_sealed(key, bytes.fromhex(sealed), rid.encode()))
        return {v for pair in linked.get("fingerprints", ()) for v in pair if isinstance(v, str)}
    except (SealError, ValueError, TypeError, AttributeError):
        return set()


def unseal_subject(
    wrapped: bytes | None, keys: KeyFile | None, rid: str, kid: str, body: Mapping[str, Any]
) -> tuple[SubjectState, Linked | None]:
    """The subject-linked fields sealed in ``body`` under subject key ``kid`` (``wrapped``:
    that key as stored, None once erased), and what became of them."""
    if wrapped is None:
        return "erased", None
    if keys is None:
        return "sealed", None
    try:
        key = open_sealed(keys.wrap_key, wrapped, b"subject-key:" + kid.encode())
        linked = json.loads(open_sealed(key, bytes.fromhex(body["sealed"]), rid.encode()))
    except (SealError, KeyError, ValueError):
        return "sealed", None
    return "open", linked


def sealed_view(rec: TransferRecord) -> TransferRecord:
    """``rec`` with its subject-linked fields left sealed, as exports and the console show
    it to whoever may not see who the data was about."""
    return rec if rec.sealed is None else replace(rec, sealed=None, subject="sealed")


def fingerprints_of(rec: TransferRecord) -> set[str]:
    """Every image fingerprint ``rec`` holds, in the clear or opened from its sealed fields."""
    out: set[str] = set()
    for img in rec.what.get("images", ()):
        facts: Mapping[str, Any] = img
        out.update(v for k, v in facts.items() if k.startswith("fingerprint_") and v)
    if rec.sealed is not None:
        for pair in rec.sealed.get("fingerprints", ()):
            out.update(v for v in pair if v)
    return out
