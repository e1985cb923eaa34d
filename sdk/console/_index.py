"""The console's index of the log: one row of facts per transfer, in columns, so that a
million transfers filter, page and add up in milliseconds.

It is built from :meth:`AuditLog.facts` (SQLite pulls the facts out of each body; no record
objects are made) in chunks, in a background thread that reports its progress, and then kept
current: each refresh reads only the entries written since. A ``finish`` updates the outcome
of its ``begin``'s row, found through the table of transfers still open (the only ones a
finish can still arrive for), so the index holds no table of every record id. A prune (the
oldest entry changes) starts it over.

Text facts (vendor, country, app, ...) are stored as small integer codes into a vocabulary
per column; numbers as they are. Values a tampered row might hold (a list where a name
belongs, a negative count) are read as text or as zero here; the integrity check on the
overview says the log was altered.
"""

from __future__ import annotations

import json
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np  # noqa: TID253 - only `veilpix audit serve` loads the console

from veilpix.audit._records import StatsRow

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from veilpix.audit._log import AuditLog

__all__ = ["OUTCOMES", "TEXT_COLUMNS", "Filters", "Index"]

OUTCOMES = ("sent", "blocked", "failed", "unknown")
_OUTCOME = {name: i for i, name in enumerate(OUTCOMES)}
_UNKNOWN = _OUTCOME["unknown"]
# the text facts kept as codes, in FACT_PATHS' terms; "rule" is a blocked call's rule
TEXT_COLUMNS = (
    "month",
    "vendor",
    "country",
    "host",
    "mechanism",
    "app",
    "route",
    "purpose",
    "basis",
    "rule",
)
# (named as the StatsRow counters they add up to)
_NUMBERS = ("images", "bytes_sent", "faces_blurred", "faces_unblurred", "images_unchecked")
_CHUNK = 20_000


def _text(value: Any) -> str:
    """A fact as text ("" when absent)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _count(value: Any, limit: int = (1 << 31) - 1) -> int:
    """A count or a size (0 when absent or not a whole number from 0 to ``limit``)."""
    return value if type(value) is int and 0 <= value <= limit else 0


def _size(value: Any) -> int:
    return _count(value, (1 << 62) - 1)


def _stamp(ts: str) -> int:
    """Seconds since the epoch of an entry time (0 when it is not one)."""
    try:
        return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
    except (ValueError, AttributeError):
        return 0


@dataclass(frozen=True)
class Filters:
    """What the transfers list is narrowed to (None: any). ``since``/``until`` are epoch
    seconds (``until`` exclusive); ``country`` may also be ``"third"`` (outside the EEA) or
    ``"third-no-mechanism"``; ``outcome`` one of :data:`OUTCOMES`."""

    since: int | None = None
    until: int | None = None
    vendor: str | None = None
    country: str | None = None
    outcome: str | None = None
    app: str | None = None
    purpose: str | None = None
    basis: str | None = None
    rule: str | None = None

    def active(self) -> bool:
        return any(v is not None for v in self.__dict__.values())


class _Vocab:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.codes: dict[str, int] = {}

    def code(self, name: str) -> int:
        found = self.codes.get(name)
        if found is None:
            found = self.codes[name] = len(self.names)
            self.names.append(name)
        return found


class Index:
    """The facts of every transfer in ``log``, kept current by :meth:`refresh`.

    Thread-safe: one lock guards the columns; :meth:`build` runs in a thread of its own and
    readers see ``progress`` until it is done. ``eea`` is the set of country codes inside the
    EEA (for the "third country" filters)."""

    def __init__(self, log: AuditLog, eea: Iterable[str]) -> None:
        self.log = log
        self.eea = frozenset(eea)
        self._lock = threading.RLock()
        self._clear()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.done = 0  # entries read by the build so far
        self.total = 0  # entries to read
        self._last_refresh = 0.0

    def _clear(self) -> None:
        self.seq = array("q")
        self.ts = array("q")
        self.outcome = array("b")
        self.subject = array("b")
        # (codes and counts in 32 bits, sizes in 64: about 70 bytes a transfer, and as much
        # again for the numpy copy readers use)
        self.cols = {name: array("i") for name in TEXT_COLUMNS}
        self.nums = {name: array("q" if name == "bytes_sent" else "i") for name in _NUMBERS}
        self.vocab = {name: _Vocab() for name in TEXT_COLUMNS}
        self.ids: dict[str, int] = {}  # open transfers (no finish yet): record id -> row
        self.last = 0  # the newest entry read
        self.first = 0  # the oldest entry when built (a prune raises it)
        self.cursor: Any = None  # how far the log was read (the log's own cursor)
        self.unsorted = False  # a row came in after rows of a larger seq (a fleet log)
        self.entries = 0
        self._version = 0
        self._snapshot: tuple[int, dict[str, NDArray[Any]]] | None = None
        self._memo: dict[tuple[int, Filters | None, str | None], dict[str, StatsRow]] = {}

    # -- building and keeping current ------------------------------------------------------------

    def build(self, on_progress: Callable[[int, int], None] | None = None) -> None:
        """Read the whole log (in chunks; ``progress`` tells how far). Sets ``ready``."""
        self.error = None
        try:
            first, last = self.log.extent()
            with self._lock:
                self._clear()
                self.total, self.done = last - first + 1 if last else 0, 0
            self._read_from(on_progress)
            with self._lock:
                self.first = first
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.ready.set()

    def _read_from(self, on_progress: Callable[[int, int], None] | None) -> None:
        """Read every entry after the cursor."""
        while True:
            rows, cursor = self.log.facts_after(self.cursor, _CHUNK)
            if not rows:
                return
            with self._lock:
                for row in rows:
                    self._add(row)
                self.cursor = cursor
                self.last = max(self.last, *(int(r[0]) for r in rows))
                self._version += 1
                self.entries += len(rows)
                self.done += len(rows)
            if on_progress is not None:
                on_progress(self.done, self.total)

    def refresh(self, *, at_most_every: float = 1.0) -> bool:
        """Take in what was written since the last look (at most once per ``at_most_every``
        seconds). False when the index must be built again (a prune or a restart, or entries
        went missing): the caller starts :meth:`build` in the background."""
        if not self.ready.is_set() or self.error is not None:
            return True
        now = time.monotonic()
        with self._lock:
            if now - self._last_refresh < at_most_every:
                return True
            self._last_refresh = now
            first, last = self.log.extent()
            late = self.log.late_entries  # (then entries may appear below the newest read)
            if last == self.last and first == self.first and not late:
                return True
            if last >= self.last and first == self.first:
                self._read_from(None)
                return True
            self.ready.clear()
            return False

    def _add(self, row: Sequence[Any]) -> None:
        seq, kind, record, ts, has_subject, facts_text, many = row
        if kind not in ("begin", "finish"):
            return
        try:
            facts = json.loads(facts_text)
        except (TypeError, ValueError):
            facts = []
        if not isinstance(facts, list) or len(facts) != 18:
            facts = [None] * 18
        (
            vendor,
            country,
            host,
            mechanism,
            app,
            route,
            purpose,
            basis,
            rule,
            image_count,
            request_bytes,
            bytes_after,
            _bytes_before,
            blurred,
            unblurred,
            checked,
            outcome,
            finish_bytes,
        ) = facts
        if kind == "finish":
            self._finish(record, outcome, rule, finish_bytes)
            return
        row_no = len(self.seq)
        if row_no and seq < self.seq[-1]:
            self.unsorted = True
        self.seq.append(seq)
        self.ts.append(_stamp(ts))
        self.outcome.append(_UNKNOWN)
        self.subject.append(1 if has_subject else 0)
        for name, value in zip(
            TEXT_COLUMNS,
            (
                ts[:7] if isinstance(ts, str) else "",
                vendor,
                _text(country).upper(),
                host,
                mechanism,
                app,
                route,
                purpose,
                basis,
                "",
            ),
            strict=True,
        ):
            self.cols[name].append(self.vocab[name].code(_text(value)))
        faces = [(blurred, unblurred, checked)] if _count(image_count) else []
        if many is not None:
            try:
                faces = [tuple(f) for f in json.loads(many) if isinstance(f, list) and len(f) == 3]
            except (TypeError, ValueError):
                faces = []
        self.nums["images"].append(_count(image_count))
        self.nums["bytes_sent"].append(_size(request_bytes) or _size(bytes_after))
        self.nums["faces_blurred"].append(_count(sum(_count(f[0]) for f in faces)))
        self.nums["faces_unblurred"].append(_count(sum(_count(f[1]) for f in faces)))
        self.nums["images_unchecked"].append(sum(1 for f in faces if f[2] is False))
        if isinstance(record, str):
            self.ids[record] = row_no

    def _finish(self, record: Any, outcome: Any, rule: Any, sent_bytes: Any) -> None:
        row_no = self.ids.pop(record, None) if isinstance(record, str) else None
        if row_no is None:  # its begin was pruned, or the log was altered: verify tells
            return
        code = _OUTCOME.get(outcome) if isinstance(outcome, str) else None
        self.outcome[row_no] = _UNKNOWN if code is None else code
        if code == _OUTCOME["blocked"]:
            self.cols["rule"][row_no] = self.vocab["rule"].code(_text(rule))
            for name in _NUMBERS:  # a blocked call sent nothing
                self.nums[name][row_no] = 0
        elif _size(sent_bytes):
            self.nums["bytes_sent"][row_no] = _size(sent_bytes)

    # -- reading ---------------------------------------------------------------------------------

    def _columns(self) -> dict[str, NDArray[Any]]:
        """The columns as numpy arrays: copies, made once per change (the arrays they come
        from grow, and a view would pin their buffers), so readers never hold the lock."""
        with self._lock:
            if self._snapshot is not None and self._snapshot[0] == self._version:
                return self._snapshot[1]
            out: dict[str, NDArray[Any]] = {
                "seq": np.array(self.seq, dtype=np.int64),
                "ts": np.array(self.ts, dtype=np.int64),
                "outcome": np.array(self.outcome, dtype=np.int8),
            }
            for name in TEXT_COLUMNS:
                out[name] = np.array(self.cols[name], dtype=np.int32)
            for name in _NUMBERS:
                wide = name == "bytes_sent"
                out[name] = np.array(self.nums[name], dtype=np.int64 if wide else np.int32)
            if self.unsorted:  # pages are taken in seq order
                order = np.argsort(out["seq"], kind="stable")
                out = {name: column[order] for name, column in out.items()}
            self._snapshot = (self._version, out)
            return out

    def names(self, column: str) -> list[str]:
        """The values ``column`` takes, sorted (for the filter menus)."""
        with self._lock:
            return sorted(n for n in self.vocab[column].names if n)

    def _mask(self, c: Mapping[str, NDArray[Any]], f: Filters) -> NDArray[np.bool_]:
        mask = np.ones(len(c["seq"]), dtype=bool)
        if f.since is not None:
            mask &= c["ts"] >= f.since
        if f.until is not None:
            mask &= c["ts"] < f.until
        if f.outcome is not None:
            mask &= c["outcome"] == _OUTCOME.get(f.outcome, -1)
        for column, value in (
            ("vendor", f.vendor),
            ("app", f.app),
            ("purpose", f.purpose),
            ("basis", f.basis),
            ("rule", f.rule),
        ):
            if value is not None:
                mask &= c[column] == self.vocab[column].codes.get(value, -1)
        if f.country in ("third", "third-no-mechanism"):
            vocab = self.vocab["country"].names
            third = np.array([n not in self.eea for n in vocab], dtype=bool)
            mask &= third[c["country"]] if len(vocab) else False
            mask &= c["outcome"] != _OUTCOME["blocked"]  # a blocked call transferred nothing
            if f.country == "third-no-mechanism":
                mask &= c["mechanism"] == self.vocab["mechanism"].codes.get("", -1)
        elif f.country is not None:
            mask &= c["country"] == self.vocab["country"].codes.get(f.country.upper(), -1)
        return mask

    def page(
        self, f: Filters, *, before: int | None, size: int
    ) -> tuple[list[int], int, int | None]:
        """A page of the list, newest first: the begin seqs of up to ``size`` transfers
        that match ``f``, older than seq ``before`` (None: the newest); how many match in
        all; and the ``before`` of the next page (None: this is the last)."""
        c = self._columns()
        mask = self._mask(c, f)
        total = int(mask.sum())
        if before is not None:
            mask &= c["seq"] < before
        hits = np.flatnonzero(mask)
        chosen = hits[::-1][: size + 1]
        seqs = [int(s) for s in c["seq"][chosen]]
        more = seqs[size - 1] if len(seqs) > size else None
        return seqs[:size], total, more

    def select(self, f: Filters) -> list[int]:
        """The begin seqs of every transfer matching ``f``, oldest first (an export)."""
        c = self._columns()
        return [int(s) for s in c["seq"][self._mask(c, f)]]

    def count_newer(self, f: Filters, before: int) -> int:
        """How many transfers matching ``f`` are at seq ``before`` or newer."""
        c = self._columns()
        return int((self._mask(c, f) & (c["seq"] >= before)).sum())

    def totals(self, f: Filters | None = None, by: str | None = None) -> dict[str, StatsRow]:
        """Totals per value of ``by`` (a text column such as ``"month"`` or ``"vendor"``), or
        one ``"*"`` group; over the transfers matching ``f``. Kept until the index changes."""
        key = (self._version, f, by)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        if len(self._memo) > 64:
            self._memo.clear()
        self._memo[key] = found = self._totals(f, by)
        return found

    def _totals(self, f: Filters | None, by: str | None) -> dict[str, StatsRow]:
        c = self._columns()
        mask = self._mask(c, f or Filters())
        if by is None:
            keys = np.zeros(len(mask), dtype=np.int64)
            labels = ["*"]
        else:
            keys = c[by].astype(np.int64)
            labels = list(self.vocab[by].names)
        keys = keys[mask]
        groups = len(labels)
        out = {label: StatsRow(label, label, label) for label in labels}
        if not len(keys):
            return {}
        outcomes = c["outcome"][mask].astype(np.int64)
        per_outcome = np.bincount(keys * len(OUTCOMES) + outcomes, minlength=groups * len(OUTCOMES))
        per_outcome = per_outcome.reshape(groups, len(OUTCOMES))
        counts = per_outcome.sum(axis=1)
        sums = {
            name: np.bincount(keys, weights=c[name][mask], minlength=groups) for name in _NUMBERS
        }
        for i, label in enumerate(labels):
            if not counts[i]:
                out.pop(label)
                continue
            t = out[label]
            t.calls = int(counts[i])
            for j, name in enumerate(OUTCOMES):
                setattr(t, name, int(per_outcome[i, j]))
            for name in _NUMBERS:
                setattr(t, name, int(sums[name][i]))
        return out

    def blocked_by_rule(self) -> dict[str, int]:
        c = self._columns()
        rules = c["rule"][c["outcome"] == _OUTCOME["blocked"]]
        counts = np.bincount(rules, minlength=len(self.vocab["rule"].names))
        return {self.vocab["rule"].names[i] or "?": int(n) for i, n in enumerate(counts) if n}

    def mechanisms(self) -> dict[str, dict[str, int]]:
        """Per destination country: transfers (calls not blocked) by transfer mechanism
        ("" when none was recorded)."""
        c = self._columns()
        sent = c["outcome"] != _OUTCOME["blocked"]
        width = max(1, len(self.vocab["mechanism"].names))
        pairs = c["country"][sent].astype(np.int64) * width + c["mechanism"][sent]
        counts = np.bincount(pairs, minlength=len(self.vocab["country"].names) * width)
        out: dict[str, dict[str, int]] = {}
        for pair in np.flatnonzero(counts):
            country, mech = divmod(int(pair), width)
            name = self.vocab["country"].names[country] or "?"
            out.setdefault(name, {})[self.vocab["mechanism"].names[mech]] = int(counts[pair])
        return out

    def __len__(self) -> int:
        return len(self.seq)
