"""``veilpix audit serve`` as a process: it prints where to go, serves until SIGTERM, keeps
login tokens out of its access lines, refuses what it must, and its help says how."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from clikit import clean_env, run
from consolekit import fill_log


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "audit.db"
    fill_log(path, 3)
    return path


RUNNING: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_server_left() -> object:
    yield
    while RUNNING:  # (a failed test must not leave a console running)
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _serve(*args: str) -> tuple[subprocess.Popen[str], dict]:  # type: ignore[type-arg]
    proc = subprocess.Popen(
        [sys.executable, "-m", "veilpix", "audit", "serve", "--port", "0", "--json", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    RUNNING.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        pytest.fail(f"serve printed nothing: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line)


def _get(url: str, cookie: str = "") -> http.client.HTTPResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request("GET", target, headers={"Cookie": cookie} if cookie else {})
    response = conn.getresponse()
    response.read()
    return response


def test_serve_signs_in_once_and_stops_on_sigterm(logged: Path) -> None:
    proc, info = _serve("--log", str(logged), "--access-log")
    try:
        assert info["url"].startswith("http://127.0.0.1:")
        login = info["login_url"]
        token = login.split("token=")[1]
        first = _get(login)
        assert first.status == 303
        cookie = (first.getheader("Set-Cookie") or "").split(";")[0]
        assert first.getheader("Server") == "veilpix-console"
        page = _get(info["url"] + "/transfers", cookie)
        assert page.status == 200
        assert _get(login).status == 403  # spent
        assert _get(info["url"] + "/").status == 303  # no cookie: to the login page
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "GET /login 303" in err and "GET /transfers 200" in err  # the access lines
    assert token not in err and token not in out
    assert "console stopped" in err


def test_serve_refuses_what_it_must(logged: Path, tmp_path: Path) -> None:
    r = run("audit", "serve", "--log", str(logged), "--host", "0.0.0.0")
    assert r.returncode == 2 and "loopback only" in r.stderr
    r = run("audit", "serve", "--log", str(logged), "--host", "192.0.2.1", "--allow-remote")
    assert r.returncode == 2 and "at least one user" in r.stderr
    r = run("audit", "serve", "--log", str(logged), "--port", "70000")
    assert r.returncode == 2 and "0 to 65535" in r.stderr
    r = run("audit", "serve", "--log", str(tmp_path / "missing.db"))
    assert r.returncode == 2 and "no transfer log" in r.stderr
    r = run(
        "audit", "serve", "--log", str(logged), "--key", str(tmp_path / "nokey"), "--allow-changes"
    )
    assert r.returncode == 2 and "key file" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[console]\nshow_subjects = "yes"\n')
    r = run("audit", "serve", "--log", str(logged), "--config", str(bad))
    assert r.returncode == 2 and "show_subjects" in r.stderr
    bad.write_text('[console.users]\nalice = "hunter2"\n')
    r = run("audit", "serve", "--log", str(logged), "--config", str(bad))
    assert r.returncode == 2 and "not a password hash" in r.stderr


def test_serve_help_and_hash_password() -> None:
    r = run("audit", "serve", "--help")
    assert r.returncode == 0
    for flag in ("--allow-changes", "--allow-remote", "--tls-cert", "--hash-password", "examples:"):
        assert flag in r.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "veilpix", "audit", "serve", "--hash-password"],
        input="correct horse battery staple\n",
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    hashed = proc.stdout.strip().strip('"')
    from veilpix._passwords import check_password

    assert check_password("correct horse battery staple", hashed)
    short = subprocess.run(
        [sys.executable, "-m", "veilpix", "audit", "serve", "--hash-password"],
        input="short\n",
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert short.returncode == 2 and "12 characters" in short.stderr


def test_remote_with_users_warns_without_tls(logged: Path, tmp_path: Path) -> None:
    from veilpix._passwords import hash_password

    config = tmp_path / "veilpix.toml"
    config.write_text(
        f'[console.users]\nalice = "{hash_password("correct horse battery staple")}"\n'
    )
    proc, info = _serve(
        "--log", str(logged), "--config", str(config), "--host", "127.0.0.2", "--allow-remote"
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    # 127.0.0.2 is loopback: no warning; the rules only bite off loopback
    assert "WARNING" not in err
    assert info["url"].startswith("http://127.0.0.2:")
