"""The console's actions: read-only by default; erase and resolve asked twice, with a
confirmation bound to exactly what was shown; every action recorded in the log (who, what),
the chain still verifying; exports streamed in three formats, recorded before they leave."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import auditkit
from consolekit import Client, console, fill_log, hidden_fields, text
from veilpix import AuditLog, verify_log


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Path, dict]:  # type: ignore[type-arg]
    path = tmp_path / "audit.db"
    return path, fill_log(path, 5)


def _entries(path: Path) -> list[tuple[int, str, str]]:
    db = auditkit.raw(path)
    try:
        return db.execute("SELECT seq, kind, body FROM entries ORDER BY seq").fetchall()
    finally:
        db.close()


def _reviews(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(b) for _, kind, b in _entries(path) if kind == "review"]


# -- read-only by default ------------------------------------------------------------------------


def test_a_read_only_console_changes_nothing(logged) -> None:  # type: ignore[no-untyped-def]
    path, ids = logged

    def state() -> tuple[bytes, bytes]:
        # (a reader adds SQLite's empty -wal and its -shm beside the log: not a change)
        return path.read_bytes(), Path(str(path) + ".key").read_bytes()

    before = state()
    app = console(path)
    c = Client(app).login()
    page = text(c.get("/actions"))
    assert "started read-only" in page and "--allow-changes" in page
    assert page.count("<fieldset disabled>") == 3  # erase, resolve, export
    for action, fields in (
        ("/actions/erase", {"subject": "customer-4711", "request": "DSR-1"}),
        ("/actions/resolve", {"record": ids["open"], "outcome": "failed", "reason": "x"}),
        ("/actions/export", {"format": "csv"}),
    ):
        r = c.post(action, fields)
        assert r.status == 403, action
        assert "read-only" in text(r)
    assert c.post("/actions/verify").status == 303  # verification runs, unrecorded
    app.verify_job.wait(30)
    app.log.close()
    assert state() == before
    assert app.verify_job.result is not None


# -- erase ---------------------------------------------------------------------------------------


def test_erase_is_confirmed_and_recorded(logged) -> None:  # type: ignore[no-untyped-def]
    path, ids = logged
    app = console(path, changes=True, show_subjects=True)
    c = Client(app).login()
    asked = c.post("/actions/erase", {"subject": "customer-4711", "request": "DSR-2026-118"})
    page = text(asked)
    assert asked.status == 200 and "Confirm: Erase" in page
    assert "<b>1</b> transfer" in page and "DSR-2026-118" in page
    assert "customer-4711" not in page.split("<form", 1)[0]  # the question names no subject
    assert not _reviews(path)  # nothing done yet
    fields = hidden_fields(page, "/actions/erase")
    # a confirmation for one subject cannot erase another
    swapped = dict(fields, subject="someone-else")
    again = c.post("/actions/erase", swapped)
    assert "Confirm: Erase" in text(again)
    assert not _reviews(path)
    # nor does another session's confirmation, or a forged code, work
    other = Client(app).login()
    assert "Confirm: Erase" in text(other.post("/actions/erase", dict(fields, csrf=other.csrf())))
    assert "Confirm: Erase" in text(c.post("/actions/erase", dict(fields, confirm="0" * 64)))
    done = c.post("/actions/erase", fields)
    assert "Erased the subject-linked fields of 1 transfer" in text(done)
    # a confirmation acts once: the same page sent again asks again
    assert "Confirm: Erase" in text(c.post("/actions/erase", fields))
    reviews = _reviews(path)
    assert len(reviews) == 1
    review = reviews[0]
    assert review["action"] == "erase" and review["via"] == "console"
    assert review["by"].startswith("compliance (console, login link, from 127.0.0.1")
    assert review["facts"]["request_ref"] == "DSR-2026-118" and review["facts"]["records"] == 1
    raw = b"".join(b.encode() for _, _, b in _entries(path))
    assert b"customer-4711" not in raw
    detail = text(c.get(f"/transfers/{ids['subject']}"))
    assert "[erased]" in detail
    history = text(c.get("/actions"))
    assert "DSR-2026-118" in history and "erase" in history
    app.log.close()
    result = verify_log(path)
    assert result.intact, result.problems


def test_erasing_an_unknown_subject_is_recorded_too(logged) -> None:  # type: ignore[no-untyped-def]
    path, _ = logged
    app = console(path, changes=True, show_subjects=True)
    c = Client(app).login()
    page = text(c.post("/actions/erase", {"subject": "nobody", "request": "DSR-9"}))
    assert "No transfer is linked to this subject" in page
    done = c.post("/actions/erase", hidden_fields(page, "/actions/erase"))
    assert "the request is recorded" in text(done)
    assert [r["facts"]["records"] for r in _reviews(path)] == [0]
    app.log.close()


def test_the_erase_question_keeps_counts_from_those_who_may_not_see_subjects(logged) -> None:  # type: ignore[no-untyped-def]
    """Without show_subjects, asking costs nothing and would tell whether a person is in
    the log: the count comes only with the erasure, which is recorded."""
    path, _ = logged
    app = console(path, changes=True)
    c = Client(app).login()
    for subject in ("customer-4711", "nobody"):
        page = text(c.post("/actions/erase", {"subject": subject, "request": "DSR-7"}))
        assert "every transfer linked to this subject" in page
        assert "<b>1</b>" not in page and "No transfer is linked" not in page
    assert not _reviews(path)
    app.log.close()


@pytest.mark.parametrize(
    "fields", [{}, {"subject": "x"}, {"request": "y"}, {"subject": "  ", "request": "y"}]
)
def test_erase_needs_both_references(logged, fields) -> None:  # type: ignore[no-untyped-def]
    app = console(logged[0], changes=True)
    r = Client(app).login().post("/actions/erase", fields)
    assert r.status == 400
    assert not _reviews(logged[0])
    app.log.close()


# -- resolve -------------------------------------------------------------------------------------


def test_resolve_is_confirmed_and_recorded(logged) -> None:  # type: ignore[no-untyped-def]
    path, ids = logged
    app = console(path, changes=True)
    c = Client(app).login()
    fields = {
        "record": ids["open"][:8],
        "outcome": "failed",
        "reason": "vendor shows nothing",
        "status": "",
    }
    page = text(c.post("/actions/resolve", fields))
    assert "Confirm: Resolve" in page and ids["open"] in page and "vendor shows nothing" in page
    confirm = hidden_fields(page, "/actions/resolve")
    assert confirm["record"] == ids["open"]  # the prefix became the full id
    changed = dict(confirm, outcome="sent")
    assert "Confirm: Resolve" in text(c.post("/actions/resolve", changed))
    done = c.post("/actions/resolve", confirm)
    assert "outcome recorded as failed" in text(done)
    with AuditLog(path, readonly=True) as log:
        rec = log.get(ids["open"])
        assert rec.outcome == "failed"
        assert rec.finish is not None
        assert rec.finish["reason"] == "resolved by operator: vendor shows nothing"
    review = _reviews(path)[-1]
    assert review["action"] == "resolve" and review["facts"] == {
        "record": ids["open"],
        "outcome": "failed",
    }
    # once resolved, it cannot be resolved again
    again = c.post("/actions/resolve", dict(fields, record=ids["open"]))
    assert again.status == 400 and "already has an outcome" in text(again)
    app.log.close()
    assert verify_log(path).intact


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"record": "nothere1", "outcome": "sent", "reason": "x"}, "no transfer"),
        ({"record": "abc", "outcome": "sent", "reason": "x"}, "at least 8"),
        ({"outcome": "sent", "reason": "x"}, "Give the record id"),
        ({"record": "X", "outcome": "blocked", "reason": "x"}, "Give the record id"),
        ({"record": "X", "outcome": "sent", "reason": "x", "status": "abc"}, "100 to 599"),
        ({"record": "X", "outcome": "sent", "reason": "x", "status": "42"}, "100 to 599"),
    ],
)
def test_resolve_refuses_bad_input(logged, fields, message) -> None:  # type: ignore[no-untyped-def]
    path, ids = logged
    if fields.get("record") == "X":
        fields = dict(fields, record=ids["open"])
    app = console(path, changes=True)
    r = Client(app).login().post("/actions/resolve", fields)
    assert r.status == 400
    assert message in text(r)
    app.log.close()


def test_a_sent_transfer_cannot_be_resolved(logged) -> None:  # type: ignore[no-untyped-def]
    path, ids = logged
    app = console(path, changes=True)
    r = (
        Client(app)
        .login()
        .post("/actions/resolve", {"record": ids["sent"][0], "outcome": "failed", "reason": "x"})
    )
    assert r.status == 400 and "already has an outcome (sent)" in text(r)
    app.log.close()


# -- verify --------------------------------------------------------------------------------------


def test_verification_is_recorded_with_its_result(logged) -> None:  # type: ignore[no-untyped-def]
    path, _ = logged
    app = console(path, changes=True)
    c = Client(app).login()
    assert c.post("/actions/verify").status == 303
    app.verify_job.wait(30)
    review = _reviews(path)[-1]
    assert review["action"] == "verify"
    assert review["facts"]["intact"] is True and review["facts"]["head"].startswith("vph1:")
    assert "Verified" in text(c.get("/")) or "Intact" in text(c.get("/"))
    app.log.close()
    assert verify_log(path).intact


# -- exports -------------------------------------------------------------------------------------


def _download(r) -> bytes:  # type: ignore[no-untyped-def]
    assert r.status == 200, r.body[:300]
    assert r.stream is not None
    return b"".join(r.stream)


def test_exports_stream_and_are_recorded_first(logged) -> None:  # type: ignore[no-untyped-def]
    path, ids = logged
    app = console(path, changes=True)
    c = Client(app).login()
    total = app.log.counts()["records"]
    r = c.post("/actions/export", {"format": "csv"})
    assert "attachment" in (r.header("Content-Disposition") or "")
    assert [x["action"] for x in _reviews(path)] == ["export"]  # before a byte was read
    rows = list(csv.DictReader(io.StringIO(_download(r).decode())))
    assert len(rows) == total
    assert "customer-4711" not in json.dumps(rows)  # subjects sealed
    lines = _download(c.post("/actions/export", {"format": "jsonl", "outcome": "unknown"}))
    docs = [json.loads(line) for line in lines.splitlines()]
    assert [d["id"] for d in docs] == [ids["open"]]
    ocsf = _download(c.post("/actions/export", {"format": "ocsf", "vendor": "gemini"}))
    events = [json.loads(line) for line in ocsf.splitlines()]
    assert events and all(e["class_uid"] == 6003 for e in events)
    facts = [x["facts"] for x in _reviews(path)]
    assert facts[1] == {
        "format": "jsonl",
        "records": 1,
        "filters": {"outcome": "unknown"},
        "subjects": False,
    }
    assert facts[2]["records"] == len(events)
    assert c.post("/actions/export", {"format": "xml"}).status == 400
    app.log.close()
    assert verify_log(path).intact


def test_subjects_in_exports_only_for_allowed_viewers(logged) -> None:  # type: ignore[no-untyped-def]
    path, _ = logged
    app = console(path, changes=True, show_subjects=True)
    c = Client(app).login()
    assert "include subject references" in text(c.get("/actions"))
    with_subjects = _download(c.post("/actions/export", {"format": "jsonl", "subjects": "1"}))
    assert b"customer-4711" in with_subjects
    app.log.close()
    app = console(path, changes=True, show_subjects=False)
    c = Client(app).login()
    assert "include subject references" not in text(c.get("/actions"))
    sealed = _download(c.post("/actions/export", {"format": "jsonl", "subjects": "1"}))
    assert b"customer-4711" not in sealed
    assert _reviews(path)[-1]["facts"]["subjects"] is False
    app.log.close()


def test_the_token_and_the_subject_never_reach_the_log(logged) -> None:  # type: ignore[no-untyped-def]
    path, _ = logged
    app = console(path, changes=True)
    token = app.sessions.new_link()
    c = Client(app)
    assert c.get(f"/login?token={token}").status == 303
    page = text(c.post("/actions/erase", {"subject": "customer-4711", "request": "DSR-3"}))
    c.post("/actions/erase", hidden_fields(page, "/actions/erase"))
    c.post("/actions/verify")
    app.verify_job.wait(30)
    _download(c.post("/actions/export", {"format": "csv"}))
    app.log.close()
    raw = Path(path).read_bytes() + b"".join(
        p.read_bytes() for p in path.parent.iterdir() if p.name.startswith("audit.db-")
    )
    assert token.encode() not in raw
    assert b"customer-4711" not in raw
    session = c.cookies["veilpix_console"]
    assert session.encode() not in raw
