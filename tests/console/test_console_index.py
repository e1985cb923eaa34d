"""The console's index against the log itself: the same transfers, totals and filters as
the log's own records and ``summarize`` give, whatever shape a tampered row takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import auditkit
from consolekit import fill_log
from veilpix import AuditLog
from veilpix.audit._records import summarize
from veilpix.console._index import Filters, Index


def _built(path: Path) -> tuple[AuditLog, Index]:
    log = AuditLog(path, readonly=True)
    index = Index(log, {"NL", "FR", "DE"})
    index.build()
    return log, index


def test_the_index_agrees_with_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill_log(path, 30)
    log, index = _built(path)
    records = list(log.records())
    assert len(index) == len(records)
    grand = index.totals()["*"]
    stats = summarize(records)
    assert grand.calls == sum(r.calls for r in stats)
    for outcome in ("sent", "blocked", "failed", "unknown"):
        assert getattr(grand, outcome) == sum(getattr(r, outcome) for r in stats), outcome
    assert grand.images == sum(r.images for r in stats)
    assert grand.bytes_sent == sum(r.bytes_sent for r in stats)
    assert grand.images_unchecked == sum(r.images_unchecked for r in stats)
    per_vendor = index.totals(by="vendor")
    for row in stats:
        assert per_vendor[row.vendor].calls >= row.calls
    # every filter picks what the records say
    for f, keep in (
        (Filters(vendor="gemini"), lambda r: r.where.get("vendor") == "gemini"),
        (Filters(outcome="unknown"), lambda r: r.outcome == "unknown"),
        (Filters(country="US"), lambda r: r.where.get("country") == "US"),
        (
            Filters(app="shop", outcome="sent"),
            lambda r: r.who.get("app") == "shop" and r.outcome == "sent",
        ),
        (
            Filters(country="third"),
            lambda r: r.where.get("country") not in {"NL", "FR", "DE"} and r.outcome != "blocked",
        ),
    ):
        expected = [r.seq for r in records if keep(r)]
        assert index.select(f) == expected, f
        seqs, total, _ = index.page(f, before=None, size=5)
        assert total == len(expected) and seqs == expected[::-1][:5]
    log.close()


def test_paging_walks_every_transfer_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill_log(path, 23, hostile=False)
    log, index = _built(path)
    seen: list[int] = []
    before = None
    while True:
        seqs, total, before = index.page(Filters(), before=before, size=4)
        seen += seqs
        if before is None:
            break
        assert index.count_newer(Filters(), before) == len(seen)
    assert seen == sorted(seen, reverse=True) and len(seen) == total == len(index)
    log.close()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b["where"].update(vendor=["a", "list"], country={"x": 1}),
        lambda b: b["what"].update(image_count=2**40, request_bytes=-5, bytes_after="many"),
        lambda b: b["what"]["images"][0].update(faces_blurred=2**40, faces_unblurred=-1),
        lambda b: b["what"].update(image_count=3, images=[{"faces_blurred": "x"}, 7, None]),
        lambda b: b.update(who=None),
    ],
)
def test_a_tampered_row_does_not_break_the_index(tmp_path: Path, mutate) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        auditkit.fill(log, 3)
    db = auditkit.raw(path)
    seq, body = db.execute("SELECT seq, body FROM entries WHERE kind='begin' LIMIT 1").fetchone()
    doc = json.loads(body)
    mutate(doc)
    db.execute("UPDATE entries SET body=? WHERE seq=?", (json.dumps(doc), seq))
    db.close()
    log, index = _built(path)
    assert len(index) == 3
    grand = index.totals()["*"]
    assert grand.calls == 3 and grand.images >= 0 and grand.bytes_sent >= 0
    index.names("vendor")
    index.mechanisms()
    log.close()
