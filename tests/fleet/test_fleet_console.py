"""The compliance console on a fleet log: the same pages and actions, and an index that
takes in entries whose writers committed out of order."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import auditkit
from consolekit import Client, console, fill_log, hidden_fields, text
from veilpix import AuditLog


@pytest.fixture
def fleet_env(fleet_url: str, fleet_key: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("VEILPIX_LOG_KEY", str(fleet_key))
    return fleet_url


def test_pages_and_actions_on_a_fleet(fleet_env: str) -> None:
    ids = fill_log(fleet_env, 4)
    with AuditLog(fleet_env) as second:  # a second writer's transfers
        second.begin(auditkit.transfer(3, app="other-machine")).finish(status=200)
    app = console(fleet_env, changes=True, show_subjects=True)
    try:
        c = Client(app).login()
        records = app.log.counts()["records"]
        overview = text(c.get("/"))
        assert f"<b>{records}</b>" in overview and "vpf1:" in overview
        listed = text(c.get("/transfers"))
        assert f"of {records}" in listed
        assert "1–1 of 1" in text(c.get("/transfers?app=other-machine"))
        one = text(c.get(f"/transfers/{ids['subject']}"))
        assert "customer-4711" in one
        register = text(c.get("/register"))
        assert register  # built in the background, or being built
        export = c.post("/actions/export", {"format": "csv"})
        assert export.status == 200 and export.stream is not None
        assert ids["blocked"].encode() in b"".join(export.stream)
        asked = c.post("/actions/erase", {"subject": "customer-4711", "request": "DSR-7"})
        done = c.post("/actions/erase", hidden_fields(text(asked), "/actions/erase"))
        assert "Erased the subject-linked fields of 1 transfer" in text(done)
        assert app.log.verify().ok
    finally:
        app.log.close()


def test_the_index_takes_in_an_entry_committed_after_newer_ones(fleet_env: str) -> None:
    fill_log(fleet_env, 2, hostile=False)
    app = console(fleet_env)
    slow = AuditLog(fleet_env)
    fast = AuditLog(fleet_env)
    for log in (slow, fast):  # past their first entry (which is signed at once)
        log.begin(auditkit.transfer(0)).finish(status=200)
    try:
        c = Client(app).login()
        chain = slow._writer_chain()
        with slow._write() as db, chain.batch(db):  # its transaction stays open meanwhile
            late = auditkit.transfer(1, app="slow-app")
            slow._write_begin(db, late, str(uuid.uuid4()), slow._begin_body(late))
            chain._flush(db)  # its row has its pos now, lower than the fast writer's
            fast.begin(auditkit.transfer(2, app="fast-app")).finish(status=200)
            app.index._last_refresh = 0
            assert "1–1 of 1" in text(c.get("/transfers?app=fast-app"))
        app.index._last_refresh = 0
        assert "1–1 of 1" in text(c.get("/transfers?app=slow-app"))  # committed late, still in
        page = text(c.get("/transfers"))  # newest first, by position in the log
        assert page.index("fast-app") < page.index("slow-app")
    finally:
        slow.close()
        fast.close()
        app.log.close()
