"""The console's pages: what they show, that every value from the log is escaped, that
subject references stay sealed unless allowed, the list's filters and paging, the lookup."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import auditkit
from consolekit import HOSTILE, Client, console, fill_log, text
from veilpix import AuditLog


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    path = tmp_path_factory.mktemp("console") / "audit.db"
    return path, fill_log(path, 6)


@pytest.fixture(scope="module")
def app(logged):  # type: ignore[no-untyped-def]
    c = console(logged[0])
    c.register_job.start()
    c.register_job.wait(30)
    yield c
    c.log.close()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return Client(app).login()


def _every_page(client: Client, ids: dict) -> dict[str, str]:  # type: ignore[type-arg]
    paths = [
        "/",
        "/transfers",
        "/transfers?app=" + "%3Cscript%3E",
        f"/transfers/{ids['hostile']}",
        f"/transfers/{ids['subject']}",
        f"/transfers/{ids['blocked']}",
        f"/transfers/{ids['open']}",
        "/register",
        "/actions",
        "/lookup",
    ]
    return {p: text(client.get(p)) for p in paths}


def test_hostile_values_are_escaped_everywhere(client: Client, logged) -> None:  # type: ignore[no-untyped-def]
    pages = _every_page(client, logged[1])
    for path, page in pages.items():
        assert "<script>alert" not in page, path
        assert 'alert("x")' not in page, path
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;"
    detail = pages[f"/transfers/{logged[1]['hostile']}"]
    assert detail.count(escaped) >= 5  # app, actor, legal entity, purpose, basis, reason
    assert escaped in pages["/"]  # the app in the per-app table
    assert escaped in pages["/transfers"]
    assert escaped in pages["/register"]


def test_hostile_values_in_the_filter_menus_round_trip(client: Client) -> None:
    page = text(client.get("/transfers"))
    # the hostile app is an option of the app menu, escaped, and filtering by it finds it
    assert 'value="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;"' in page
    from urllib.parse import quote

    r = text(client.get("/transfers?app=" + quote(HOSTILE)))
    assert "1–1 of 1" in r


def test_the_overview_adds_up(app, client: Client) -> None:  # type: ignore[no-untyped-def]
    page = text(client.get("/"))
    counts = app.log.counts()
    assert f"<b>{counts['records']}</b>" in page  # calls
    assert "Verified." in page or "Intact, not fully signed" in page
    assert "vph1:" in page  # the head to keep
    assert "allowed_countries" in page  # blocked by rule
    assert "Outcome unknown" in page
    for heading in ("Per vendor", "Per destination country", "Per app", "Per month"):
        assert heading in page
    assert "<svg" in page  # charts


def test_transfers_list_filters_and_pages(app, logged, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import veilpix.console._transfers as pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 4)
    c = Client(app).login()
    first = text(c.get("/transfers"))
    total = app.log.counts()["records"]
    assert f"1–4 of {total}" in first
    seen = re.findall(r'href="/transfers/([0-9a-f-]{36})"', first)
    older = re.search(r'href="(/transfers\?before=\d+)" rel="next"', first)
    assert older
    second = text(c.get(older.group(1).replace("&amp;", "&")))
    assert f"5–8 of {total}" in second
    seen += re.findall(r'href="/transfers/([0-9a-f-]{36})"', second)
    newest_first = [r.id for r in app.log.records(newest_first=True)][:8]
    assert seen == newest_first
    unknown = text(c.get("/transfers?outcome=unknown"))
    assert "1–1 of 1" in unknown and logged[1]["open"] in unknown
    blocked = text(c.get("/transfers?outcome=blocked&rule=allowed_countries"))
    assert logged[1]["blocked"] in blocked
    third = text(c.get("/transfers?country=third"))
    assert logged[1]["blocked"] not in third  # a blocked call transferred nothing
    none = text(c.get("/transfers?vendor=nosuchvendor"))
    assert "No transfer matches these filters" in none
    dated = text(c.get("/transfers?since=2000-01-01&until=2000-12-31"))
    assert "No transfer matches" in dated


@pytest.mark.parametrize(
    "query",
    [
        "before=abc",
        "before=-5",
        "since=not-a-date",
        "outcome=<x>",
        "country=%00",
        "before=99999999999999999999",
    ],
)
def test_odd_queries_do_not_break_the_list(client: Client, query: str) -> None:
    r = client.get(f"/transfers?{query}")
    assert r.status == 200


def test_a_transfer_page_shows_its_facts_and_chain(client: Client, logged) -> None:  # type: ignore[no-untyped-def]
    rid = logged[1]["sent"][0]
    page = text(client.get(f"/transfers/{rid}"))
    for fact in (
        "OpenAI, L.L.C.",
        "product photo editing",
        "api.openai.com",
        "Place in the chain",
        "Metadata removed",
        "zero-data-retention",
        "signature",
    ):
        assert fact in page, fact
    assert auditkit.API_KEY not in page and auditkit.PROMPT not in page
    assert client.get(f"/transfers/{rid[:8]}").status == 200  # a prefix will do
    assert client.get("/transfers/nothere1").status == 404
    assert client.get("/transfers/abc").status == 404  # too short to be a prefix
    blocked = text(client.get(f"/transfers/{logged[1]['blocked']}"))
    assert "allowed_countries" in blocked
    pending = text(client.get(f"/transfers/{logged[1]['open']}"))
    assert "never (outcome unknown)" in pending and "Resolve this transfer" in pending


def test_subject_references_stay_sealed_unless_allowed(logged) -> None:  # type: ignore[no-untyped-def]
    path, ids = logged
    for allowed, user, shows in (
        (False, "compliance", False),
        (True, "compliance", True),
        (frozenset({"dpo"}), "compliance", False),
        (frozenset({"dpo"}), "dpo", True),
    ):
        app = console(path, show_subjects=allowed, local_user=user)
        c = Client(app).login()
        page = text(c.get(f"/transfers/{ids['subject']}"))
        assert ("customer-4711" in page) is shows, (allowed, user)
        assert ("CONSENT-9" in page) is shows
        assert ("[sealed]" in page) is not shows
        app.register_job.start()
        app.register_job.wait(30)
        assert "customer-4711" not in text(c.get("/register"))  # the register never shows them
        app.log.close()


def test_was_this_photo_sent(client: Client, app) -> None:  # type: ignore[no-untyped-def]
    boundary = "----vp"

    def upload(data: bytes, name: str = "holiday.jpg") -> str:
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{client.csrf()}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="{name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        r = client.request(
            "POST", "/lookup", body, [("Content-Type", f"multipart/form-data; boundary={boundary}")]
        )
        assert r.status == 200
        return text(r)

    found = upload(auditkit.PHOTO)
    records = app.log.counts()["records"]
    assert "was sent in" in found and "holiday.jpg" in found
    assert found.count('href="/transfers/') >= records - 1  # every transfer sent that photo
    as_sent = upload(auditkit.CLEAN.data)  # the photo as veilpix sent it matches too
    assert "was sent in" in as_sent
    other = upload(b"\xff\xd8\xff\xe0 another photo")
    assert "No transfer in this log sent" in other
    hostile = upload(b"x", name=HOSTILE.replace('"', "%22"))  # as browsers send it
    assert "<script>alert" not in hostile
    # raw bytes (the page's script) need the CSRF header
    r = client.request(
        "POST",
        "/lookup",
        auditkit.PHOTO,
        [("Content-Type", "application/octet-stream"), ("X-CSRF-Token", client.csrf())],
    )
    assert "was sent in" in text(r)
    r = client.request(
        "POST", "/lookup", auditkit.PHOTO, [("Content-Type", "application/octet-stream")]
    )
    assert r.status == 403
    empty = client.post("/lookup", {})
    assert "Choose a photo first" in text(empty)


def test_the_lookup_needs_the_key_file(logged, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, _ = logged
    app = console(path, key_path=None)
    app.log.close()
    log = AuditLog(path, readonly=True, key_path=tmp_path / "missing.key")
    from veilpix.console import Console, Settings

    bare = Console(log, Settings(hosts=frozenset({"127.0.0.1:8790"}), local_user="x"))
    bare.start()
    bare.index_job.wait(30)
    c = Client(bare).login()
    assert "needs the log's key file" in text(c.get("/lookup"))
    log.close()


def test_the_index_keeps_up_with_new_transfers(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    fill_log(path, 3, hostile=False)
    app = console(path)
    c = Client(app).login()
    before = app.log.counts()["records"]
    with AuditLog(path) as log:
        pending = log.begin(auditkit.transfer(9, app="late-app"))
    app.index._last_refresh = 0
    page = text(c.get("/transfers?app=late-app"))
    assert "1–1 of 1" in page and "outcome unknown" in page
    with AuditLog(path) as log:
        log.finish(pending.id, outcome="sent", status=200)
    app.index._last_refresh = 0
    assert "1–1 of 1" in text(c.get("/transfers?app=late-app&outcome=sent"))
    assert f"<b>{before + 1}</b>" in text(c.get("/"))
    app.log.close()


def test_the_index_starts_over_after_a_prune(tmp_path: Path) -> None:
    from datetime import timedelta

    path = tmp_path / "audit.db"
    fill_log(path, 3, hostile=False)
    app = console(path)
    c = Client(app).login()
    with AuditLog(path) as log:
        log.prune(timedelta(0))
    app.index._last_refresh = 0
    c.get("/transfers")  # notices and rebuilds
    app.index_job.wait(30)
    page = text(c.get("/transfers"))
    assert "No transfer matches" in page
    app.log.close()


@pytest.mark.parametrize(
    "change",
    [
        "not json at all",  # a body that is not JSON
        lambda b: b["what"].update(image_count="two", request_bytes="x", bytes_after="y"),
        lambda b: b["what"]["images"][0].update(faces_blurred="x", metadata_found=["a"]),
        lambda b: b.update(who=["not", "a", "table"]),
        lambda b: b["what"].update(prompt={"length": "long"}),
    ],
)
def test_an_altered_row_leaves_the_console_usable(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    import json

    path = tmp_path / "audit.db"
    ids = fill_log(path, 4, hostile=False)
    target = ids["sent"][1]
    db = auditkit.raw(path)
    seq, body = db.execute(
        "SELECT seq, body FROM entries WHERE record=? AND kind='begin'", (target,)
    ).fetchone()
    if isinstance(change, str):
        altered = change
    else:
        doc = json.loads(body)
        change(doc)
        altered = json.dumps(doc)
    db.execute("UPDATE entries SET body=? WHERE seq=?", (altered, seq))
    db.close()
    app = console(path)
    c = Client(app).login()
    overview = c.get("/")
    assert overview.status == 200
    assert "Tampering found" in text(overview)  # the integrity box names it
    listed = c.get("/transfers")
    assert listed.status == 200
    assert ids["sent"][0] in text(listed)  # the other transfers are still listed
    detail = c.get(f"/transfers/{target}")
    assert detail.status == 200
    page = text(detail)
    assert "did not write" in page or "Who" in page
    assert c.get("/actions").status == 200
    app.register_job.start()
    app.register_job.wait(30)
    register = text(c.get("/register"))
    assert "Building the register failed" not in register
    assert "Record of processing" in register  # built, the altered transfer left out or read
    app.log.close()


def test_filter_menus_become_text_fields_when_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import veilpix.console._transfers as pages

    monkeypatch.setattr(pages, "MENU_LIMIT", 3)
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for i in range(5):
            log.begin(auditkit.transfer(i, purpose=f"purpose {i}")).finish(status=200)
    app = console(path)
    c = Client(app).login()
    page = text(c.get("/transfers"))
    assert '<input id="f-purpose" name="purpose"' in page
    assert '<select id="f-vendor"' in page  # two vendors: still a menu
    assert "1–1 of 1" in text(c.get("/transfers?purpose=purpose%203"))
    app.log.close()


def test_a_photo_sent_often_is_counted_and_the_newest_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import veilpix.console._lookup as lookup

    monkeypatch.setattr(lookup, "SHOWN", 3)
    path = tmp_path / "audit.db"
    fill_log(path, 9, hostile=False)
    app = console(path)
    c = Client(app).login()
    r = c.request(
        "POST",
        "/lookup",
        auditkit.PHOTO,
        [("Content-Type", "application/octet-stream"), ("X-CSRF-Token", c.csrf())],
    )
    page = text(r)
    total = len(app.log.with_image(auditkit.PHOTO))
    assert f"is in <b>{total}</b> recorded calls; the newest 3 are listed" in page
    assert page.count('href="/transfers/') == 3
    newest = [rec.id for rec in app.log.with_image(auditkit.PHOTO)][:3]
    assert all(rid in page for rid in newest)
    app.log.close()
