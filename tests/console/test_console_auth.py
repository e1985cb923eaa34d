"""The console's doors: login links, sessions, passwords, CSRF, the Host check, the security
headers and the address rules. Each test drives the application as a browser would."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from consolekit import HOST, Client, console, fill_log, text
from veilpix._errors import ConfigError
from veilpix._passwords import check_password, hash_password, parse_hash
from veilpix.console._app import SECURITY_HEADERS
from veilpix.console._auth import IDLE, LINK_TTL
from veilpix.console._serve import check_address


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("console") / "audit.db"
    fill_log(path, 4)
    return path


@pytest.fixture
def app(logged: Path):  # type: ignore[no-untyped-def]
    c = console(logged)
    yield c
    c.log.close()


PAGES = ["/", "/transfers", "/lookup", "/register", "/actions"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_session(app, path: str) -> None:  # type: ignore[no-untyped-def]
    r = Client(app).get(path)
    assert r.status == 303
    assert r.header("Location") == "/login"


@pytest.mark.parametrize(
    "path", ["/actions/erase", "/actions/resolve", "/actions/verify", "/actions/export", "/lookup"]
)
def test_forms_need_a_session(app, path: str) -> None:  # type: ignore[no-untyped-def]
    r = Client(app).post(path, {"csrf": "x"}, csrf=False)
    assert r.status == 403
    assert "signed out" in text(r)


def test_a_login_link_works_once(app) -> None:  # type: ignore[no-untyped-def]
    token = app.sessions.new_link()
    first = Client(app)
    r = first.get(f"/login?token={token}")
    assert r.status == 303 and r.header("Location") == "/"
    cookie = r.header("Set-Cookie") or ""
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert first.get("/").status == 200
    again = Client(app).get(f"/login?token={token}")
    assert again.status == 403
    assert "used already" in text(again)
    assert token not in text(again)


def test_a_login_link_expires(app, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    token = app.sessions.new_link()
    now = app.sessions._now()
    monkeypatch.setattr(app.sessions, "_now", lambda: now + LINK_TTL + 1)
    assert Client(app).get(f"/login?token={token}").status == 403


def test_the_token_can_be_pasted(app) -> None:  # type: ignore[no-untyped-def]
    c = Client(app)
    token = app.sessions.new_link()
    r = c.post("/login", {"token": token}, csrf=False)
    assert r.status == 303
    assert c.get("/").status == 200


def test_sessions_end_when_idle_and_on_sign_out(app, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    c = Client(app).login()
    assert c.get("/").status == 200
    r = c.post("/logout")
    assert r.status == 200 and "signed out" in text(r)
    assert c.get("/").status == 303
    c = Client(app).login()
    now = app.sessions._now()
    monkeypatch.setattr(app.sessions, "_now", lambda: now + IDLE + 1)
    assert c.get("/").status == 303


def test_a_guessed_cookie_is_no_session(app) -> None:  # type: ignore[no-untyped-def]
    c = Client(app)
    c.cookies["veilpix_console"] = "A" * 43
    assert c.get("/").status == 303


def test_cookies_are_secure_behind_tls(app) -> None:  # type: ignore[no-untyped-def]
    from veilpix.console._http import Request

    token = app.sessions.new_link()
    r = app(Request.of("GET", f"/login?token={token}", [("Host", HOST)], tls=True))
    assert "Secure" in (r.header("Set-Cookie") or "")


# -- CSRF and origins --------------------------------------------------------------------------


def test_posts_need_the_session_csrf_token(logged: Path) -> None:
    app = console(logged, changes=True)
    c = Client(app).login()
    before = app.log.counts()["entries"]
    for fields in ({}, {"csrf": ""}, {"csrf": "not-the-token"}):
        r = c.post("/actions/verify", fields, csrf=False)
        assert r.status == 403, fields
        assert "stale" in text(r)
    other = Client(app).login()
    r = c.post("/actions/verify", {"csrf": other.csrf()}, csrf=False)
    assert r.status == 403  # another session's token
    assert app.log.counts()["entries"] == before
    assert c.post("/actions/verify").status == 303
    app.log.close()


@pytest.mark.parametrize(
    "headers",
    [
        [("Origin", "http://evil.example")],
        [("Origin", "null")],
        [("Origin", "https://127.0.0.1:8790")],  # another scheme
        [("Sec-Fetch-Site", "cross-site")],
        [("Sec-Fetch-Site", "same-site")],
    ],
)
def test_posts_from_other_sites_are_refused(app, headers) -> None:  # type: ignore[no-untyped-def]
    c = Client(app).login()
    r = c.post("/actions/verify", headers=headers)
    assert r.status == 403
    assert "another site" in text(r)


def test_posts_from_the_console_itself_pass(app) -> None:  # type: ignore[no-untyped-def]
    c = Client(app).login()
    for headers in (
        [("Origin", f"http://{HOST}"), ("Sec-Fetch-Site", "same-origin")],
        [("Origin", "null"), ("Sec-Fetch-Site", "same-origin")],  # a strict referrer setting
        [],  # an old browser, or a script
    ):
        assert c.post("/actions/verify", headers=headers).status == 303, headers


def test_other_host_names_are_refused(app) -> None:  # type: ignore[no-untyped-def]
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1."""
    from veilpix.console._http import Request

    token = app.sessions.new_link()
    r = app(Request.of("GET", f"/login?token={token}", [("Host", "evil.example:8790")]))
    assert r.status == 421
    # the token was not spent by the refused request
    assert Client(app).get(f"/login?token={token}").status == 303


def test_every_answer_carries_the_security_headers(app) -> None:  # type: ignore[no-untyped-def]
    c = Client(app)
    answers = [c.get("/"), c.get("/login"), c.get("/static/console.css"), c.get("/nope")]
    c.login()
    answers += [c.get(p) for p in PAGES] + [c.get("/transfers/deadbeefdeadbeef")]
    for r in answers:
        csp = r.header("Content-Security-Policy") or ""
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert r.header("X-Frame-Options") == "DENY"
        assert r.header("Referrer-Policy") == "same-origin"
        assert r.header("X-Content-Type-Options") == "nosniff"
    assert {k for k, _ in SECURITY_HEADERS} >= {"Content-Security-Policy", "Cache-Control"}
    assert c.get("/").header("Cache-Control") == "no-store"


def test_pages_hold_no_inline_script_or_style(app) -> None:  # type: ignore[no-untyped-def]
    c = Client(app).login()
    app.register_job.start()
    app.register_job.wait(30)
    for path in [*PAGES, "/transfers?outcome=unknown"]:
        page = text(c.get(path))
        assert "style=" not in page, path
        assert " on" not in page.replace(" one", "").lower().split("<body", 1)[1].split(">")[0]
        scripts = page.count("<script")
        assert scripts == page.count('<script src="/static/console.js" defer></script>'), path


# -- passwords (remote access) -----------------------------------------------------------------


def test_password_hashes_round_trip() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("scrypt$")
    assert check_password("correct horse battery staple", stored)
    assert not check_password("correct horse battery stapl", stored)
    with pytest.raises(ConfigError, match="12 characters"):
        hash_password("short")
    for bad in ("", "scrypt$1$8$1$AAAA$AAAA", "bcrypt$x", "scrypt$16384$8$1$!!$AA"):
        with pytest.raises(ConfigError, match="not a password hash"):
            parse_hash(bad, "[console.users] alice")


def test_password_sign_in_and_throttling(logged: Path) -> None:
    app = console(logged, users={"alice": hash_password("correct horse battery staple")})
    c = Client(app, client="192.0.2.7")
    page = text(c.get("/login"))
    assert 'name="password"' in page
    ok = c.post("/login", {"user": "alice", "password": "correct horse battery staple"}, csrf=False)
    assert ok.status == 303
    assert c.get("/").status == 200
    assert "alice" in text(c.get("/"))
    bad = Client(app, client="192.0.2.8")
    for _ in range(5):
        r = bad.post("/login", {"user": "alice", "password": "wrong"}, csrf=False)
        assert r.status == 403
    r = bad.post(
        "/login", {"user": "alice", "password": "correct horse battery staple"}, csrf=False
    )
    assert r.status == 429  # even the right password waits now
    assert (
        Client(app, client="192.0.2.9")
        .post("/login", {"user": "nobody", "password": "x"}, csrf=False)
        .status
        == 403
    )
    app.log.close()


def test_the_address_rules() -> None:
    assert check_address("127.0.0.1", allow_remote=False, users=0, tls=False) is None
    assert check_address("::1", allow_remote=False, users=0, tls=False) is None
    with pytest.raises(ConfigError, match="loopback only"):
        check_address("0.0.0.0", allow_remote=False, users=1, tls=True)
    with pytest.raises(ConfigError, match="at least one user"):
        check_address("192.0.2.1", allow_remote=True, users=0, tls=True)
    warning = check_address("192.0.2.1", allow_remote=True, users=1, tls=False)
    assert warning is not None and "without TLS" in warning
    assert check_address("192.0.2.1", allow_remote=True, users=1, tls=True) is None


def test_static_files_are_the_packaged_ones(app) -> None:  # type: ignore[no-untyped-def]
    c = Client(app)
    css = c.get("/static/console.css")
    assert css.status == 200 and css.content_type.startswith("text/css")
    assert b".dropzone" in css.body and b".tiles" in css.body  # console and register styles
    js = c.get("/static/console.js")
    assert js.status == 200 and b"dropzone" in js.body
    for bad in ("/static/../_app.py", "/static/console.css/..", "/static/%2e%2e/x", "/static/"):
        assert c.get(bad).status == 404


def test_head_requests_never_sign_in_nor_count_as_failures(app) -> None:  # type: ignore[no-untyped-def]
    c = Client(app, client="192.0.2.50")
    token = app.sessions.new_link()
    for _ in range(8):
        assert c.request("HEAD", f"/login?token={token}").status == 200
    assert app.sessions.wait_before_login("192.0.2.50") == 0
    assert c.get(f"/login?token={token}").status == 303  # HEAD did not spend it


def test_at_most_two_password_checks_at_once(logged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import veilpix.console._app as app_module

    gate = threading.Event()

    def slow(password: str, stored: str) -> bool:
        gate.wait(5)
        return False

    monkeypatch.setattr(app_module, "check_password", slow)
    app = console(logged, users={"alice": hash_password("correct horse battery staple")})
    results: list[bool | None] = []
    workers = [
        threading.Thread(target=lambda: results.append(app.login_password("alice", "x")))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    time.sleep(0.2)
    assert app.login_password("alice", "x") is None  # a third waits for nobody: refused
    gate.set()
    for w in workers:
        w.join(5)
    assert results == [False, False]
    app.log.close()


def test_behind_a_tls_proxy(logged: Path) -> None:
    """public_url: forms come from it, the cookie is Secure, the proxy's X-Forwarded-For
    names the client, and only its host name is answered."""
    from veilpix.console._http import Request

    app = console(
        logged,
        public_url="https://console.example.com",
        hosts=frozenset({"console.example.com", "console.example.com:443"}),
    )
    token = app.sessions.new_link()
    headers = [("Host", "console.example.com"), ("X-Forwarded-For", "203.0.113.9")]
    r = app(Request.of("GET", f"/login?token={token}", headers))
    cookie = r.header("Set-Cookie") or ""
    assert r.status == 303 and "Secure" in cookie
    jar = [("Cookie", cookie.split(";")[0])]
    assert app.client(Request.of("GET", "/", headers)) == "203.0.113.9"
    # a client's own X-Forwarded-For line comes first; the proxy's line, last, is believed
    two = [*headers[:1], ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.7")]
    assert app.client(Request.of("GET", "/", two)) == "203.0.113.7"
    assert app.client(Request.of("GET", "/", headers, client="192.0.2.1")) == "192.0.2.1"
    page = app(Request.of("GET", "/actions", headers + jar)).body.decode()
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    ok = app(
        Request.of(
            "POST",
            "/actions/verify",
            [*headers, *jar, *form, ("Origin", "https://console.example.com")],
            f"csrf={csrf}".encode(),
        )
    )
    assert ok.status == 303
    bad = app(
        Request.of(
            "POST",
            "/actions/verify",
            [*headers, *jar, *form, ("Origin", "http://console.example.com")],
            f"csrf={csrf}".encode(),
        )
    )
    assert bad.status == 403
    assert app(Request.of("GET", "/login", [("Host", "127.0.0.1:8790")])).status == 421
    app.log.close()


def test_console_config(tmp_path: Path) -> None:
    from veilpix._config import load_config

    path = tmp_path / "veilpix.toml"
    stored = hash_password("correct horse battery staple")
    path.write_text(
        '[console]\nport = 9000\nallow_remote = true\npublic_url = "https://Console.Example.com/"\n'
        f'show_subjects = ["dpo"]\n[console.users]\ndpo = "{stored}"\n'
    )
    cfg = load_config(path).console
    assert cfg.port == 9000 and cfg.allow_remote and cfg.users == {"dpo": stored}
    assert cfg.public_url == "https://console.example.com"
    for written, kept in (
        ("https://console.example.com:443", "https://console.example.com"),
        ("http://console.example.com:80/", "http://console.example.com"),
        ("https://console.example.com:8443", "https://console.example.com:8443"),
    ):
        path.write_text(f'[console]\npublic_url = "{written}"\n')
        assert load_config(path).console.public_url == kept
    assert cfg.show_subjects == frozenset({"dpo"})
    for bad, message in (
        ("[console]\nport = 70000\n", "0 to 65535"),
        ("[console]\nport = true\n", "number"),
        ('[console]\npublic_url = "ftp://x"\n', "site's address"),
        ('[console]\npublic_url = "https://x/console"\n', "site's address"),
        ('[console]\nshow_subjects = "all"\n', "show_subjects"),
        ("[console]\nwho = 1\n", "unknown setting console.who"),
        ('[console.users]\nalice = "plain-text-password"\n', "not a password hash"),
    ):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
