"""The scripts in examples/ run as documented."""

from __future__ import annotations

import csv
import io
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import factories as F
from veilpix import AuditLog, verify_log

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_sanitize_bytes_example(tmp_path: Path) -> None:
    (tmp_path / "p.jpg").write_bytes(F.jpeg(orientation=6))
    res = run("sanitize_bytes.py", "p.jpg", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "removed GPS position" in res.stdout and F.SERIAL in res.stdout
    assert (tmp_path / "p.clean.jpg").is_file()
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    bad = run("sanitize_bytes.py", "bad.jpg", cwd=tmp_path)
    assert bad.returncode == 1 and "cannot sanitize" in bad.stderr
    assert not (tmp_path / "bad.clean.jpg").exists()


def test_sanitize_bytes_example_without_arguments(tmp_path: Path) -> None:
    res = run("sanitize_bytes.py", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "sample.clean.jpg").is_file()


def test_gps_audit_example(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "with_gps.jpg").write_bytes(F.jpeg())
    (tmp_path / "no_gps.png").write_bytes(F.encode(F.picture(), "PNG"))
    res = run("gps_audit.py", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0][0] == "path" and len(rows) == 2
    assert rows[1][0].endswith("with_gps.jpg") and float(rows[1][1]) == round(F.GPS[0], 6)


def test_blur_faces_example(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("skimage")
    res = run("blur_faces.py", "out.jpg", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "faces found: 1, blurred: 1" in res.stdout
    assert "without consent: refused" in res.stdout
    assert (tmp_path / "out.jpg").is_file()


def test_transfer_log_example(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run("transfer_log.py", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "the sample photo appears in 5 calls" in res.stdout
    assert "outcome recorded as failed" in res.stdout
    assert "subject_ref 'customer-4711' -> '[erased]'" in res.stdout
    assert "OK: the chain is unbroken" in res.stdout
    head = (out / "head.txt").read_text().strip()
    assert head.startswith("vph1:")
    result = verify_log(out / "audit.db", expect=head)
    assert result.ok and result.records == 5 and result.erasures == 1 and result.pending == 0
    with AuditLog(out / "audit.db", readonly=True) as log:
        reasons = [r.to_dict()["reason"] for r in log.records(outcome="failed")]
    assert "resolved by operator: the vendor's dashboard shows no such request" in reasons
    assert (out / "audit.db.key").is_file()
    assert (out / "public.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    rows = list(csv.DictReader((out / "transfers.csv").open(newline="")))
    assert sorted(r["outcome"] for r in rows) == ["blocked", "failed", "failed", "sent", "sent"]
    events = [json.loads(line) for line in (out / "transfers.ocsf.jsonl").read_text().splitlines()]
    assert len(events) == 5 and {e["class_uid"] for e in events} == {6003}
    assert "Integrity verified" in (out / "register.html").read_text()
    for name in ("transfers.csv", "transfers.ocsf.jsonl", "register.html"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    stored = (out / "audit.db").read_bytes()
    for secret in (b"sk-example", b"customer-4711", b"white background", b"F2LZK0XYN73D"):
        assert secret not in stored
    assert sorted(
        p.name for p in out.iterdir() if not p.name.endswith(("-wal", "-shm", "-lock"))
    ) == [
        "audit.db",
        "audit.db.key",
        "head.txt",
        "public.pem",
        "register.html",
        "transfers.csv",
        "transfers.ocsf.jsonl",
    ]


def test_transfer_log_example_without_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the script's temporary folder goes here
    res = run("transfer_log.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (folder,) = tmp_path.glob("veilpix-log-*")
    assert (folder / "register.html").is_file() and str(folder) in res.stdout


def test_openai_transport_example(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    out = tmp_path / "out"
    res = run("openai_transport.py", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "the photo: JPEG 640x480" in text and "GPS 48.85823, 2.29447, EXIF" in text
    arrived = [line for line in text.splitlines() if line.strip().startswith("image:")]
    assert len(arrived) == 3  # images.edit, chat, chat via the EU host; not the blocked call
    assert all("no GPS, no EXIF, 0 metadata finding(s)" in line for line in arrived)
    assert "POST api.openai.com/v1/images/edits" in text
    assert "POST eu.api.openai.com/v1/chat/completions" in text
    assert "RequestBlocked: rule=destination.country" in text
    assert "requests that reached the vendor: 0" in text
    assert "controls applied: regional endpoint (eu), store=false" in text
    with AuditLog(out / "audit.db", readonly=True) as log:
        records = [r.to_dict() for r in log.records()]
    assert [(r["outcome"], r["where"]["host"]) for r in records] == [
        ("sent", "api.openai.com"),
        ("sent", "api.openai.com"),
        ("blocked", "api.openai.com"),
        ("sent", "eu.api.openai.com"),
    ]
    assert records[2]["rule"] == "destination.country"
    assert {r["who"]["app"] for r in records} == {"shop"}
    assert b"sk-offline-example" not in (out / "audit.db").read_bytes()
    assert verify_log(out / "audit.db").ok


def test_openai_transport_example_defaults_and_live_without_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openai")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the script's temporary folder goes here
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    res = run("openai_transport.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (folder,) = tmp_path.glob("veilpix-openai-*")
    assert (folder / "audit.db").is_file() and str(folder) in res.stdout
    live = run("openai_transport.py", "--live", str(tmp_path / "live"), cwd=tmp_path)
    assert live.returncode == 1 and "--live needs OPENAI_API_KEY" in live.stderr
    assert not (tmp_path / "live").exists()  # nothing written, nothing sent


def test_client_example(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "out"
    res = run("client.py", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "the photo: JPEG 640x480" in text and "GPS 48.85823, 2.29447, EXIF" in text
    arrived = [line for line in text.splitlines() if line.strip().startswith("image:")]
    assert len(arrived) == 3  # OpenAI's multipart, BFL's base64, Anthropic's image block
    assert all("no GPS, no EXIF, 0 metadata finding(s)" in line for line in arrived)
    assert "[fake api.openai.com] POST /v1/images/edits" in text
    assert text.count("[fake api.us1.bfl.ai] GET /v1/get_result") == 3
    assert text.count("-> Pending") == 2 and "-> Ready" in text
    assert "[fake delivery-us1.bfl.ai] GET" in text and "(API key sent: no)" in text
    assert "provenance ['c2pa', 'digital_source_type:trainedAlgorithmicMedia']" in text
    assert text.count("removed before sending: {'gps': 1, 'device': 2, 'serial': 1}") == 3
    assert "answer: A 640x480 picture" in text
    assert "log verifies: OK (6 records)" in text
    assert Image.open(out / "openai.png").size == Image.open(out / "bfl.jpg").size == (640, 480)
    result = verify_log(out / "audit.db")
    assert result.ok and result.records == 6 and result.pending == 0
    with AuditLog(out / "audit.db", readonly=True) as log:
        records = [r.to_dict() for r in log.records()]
    assert [
        (r["where"]["method"], r["where"]["host"], r["what"]["image_count"]) for r in records
    ] == [
        ("POST", "api.openai.com", 1),
        ("POST", "api.bfl.ai", 1),
        ("GET", "api.us1.bfl.ai", 0),
        ("GET", "api.us1.bfl.ai", 0),
        ("GET", "api.us1.bfl.ai", 0),
        ("POST", "api.anthropic.com", 1),
    ]
    assert {r["outcome"] for r in records} == {"sent"}
    assert {(r["who"]["door"], r["who"]["app"]) for r in records} == {("sdk", "example")}
    for rec in records[:2]:  # the record ids printed are the log's
        assert rec["id"][:8] in text
    stored = (out / "audit.db").read_bytes()
    for secret in (b"offline-example", b"red hat", b"F2LZK0XYN73D"):
        assert secret not in stored
    assert sorted(
        p.name for p in out.iterdir() if not p.name.endswith(("-wal", "-shm", "-lock"))
    ) == [
        "audit.db",
        "audit.db.key",
        "bfl.jpg",
        "openai.png",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing written elsewhere


def test_client_example_defaults_and_live_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the script's temporary folder goes here
    for name in ("OPENAI_API_KEY", "BFL_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    res = run("client.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (folder,) = tmp_path.glob("veilpix-client-*")
    assert (folder / "audit.db").is_file() and (folder / "openai.png").is_file()
    assert str(folder) in res.stdout
    live = run("client.py", "--live", str(tmp_path / "live"), cwd=tmp_path)
    assert live.returncode == 1 and "--live needs OPENAI_API_KEY" in live.stderr
    assert not (tmp_path / "live").exists()  # nothing written, nothing sent


def test_proxy_gateway_example(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    out = tmp_path / "out"
    res = run("proxy_gateway.py", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "the photo: JPEG 640x480" in text and "GPS 48.85823, 2.29447, EXIF" in text
    arrived = [line for line in text.splitlines() if line.strip().startswith("image:")]
    assert len(arrived) == 1  # the edit; the blocked call never reached the vendor
    assert "no GPS, no EXIF, 0 metadata finding(s)" in arrived[0]
    assert "[fake OpenAI] POST /v1/images/edits" in text
    assert "Authorization reached it: True, Content-Usage: train-ai=n" in text
    assert "openai.PermissionDeniedError: HTTP 403, code destination.country" in text
    assert "requests that reached the vendor: 0" in text
    assert 'veilpix_requests_total{vendor="openai",outcome="sent"} 1' in text
    assert 'veilpix_requests_total{vendor="openai",outcome="blocked"} 1' in text
    assert "veilpix_images_total 1" in text
    with AuditLog(out / "audit.db", readonly=True) as log:
        records = [r.to_dict() for r in log.records()]
    assert [(r["outcome"], r["who"]["app"], r["who"]["door"]) for r in records] == [
        ("sent", None, "gateway"),
        ("blocked", "eu-only", "gateway"),
    ]
    assert records[1]["rule"] == "destination.country"
    for rec in records:  # the record ids printed are the log's
        assert rec["id"][:8] in text
    assert b"sk-offline-example" not in (out / "audit.db").read_bytes()
    assert verify_log(out / "audit.db").ok
    assert sorted(
        p.name for p in out.iterdir() if not p.name.endswith(("-wal", "-shm", "-lock"))
    ) == [
        "audit.db",
        "audit.db.key",
        "veilpix.toml",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing written elsewhere


def test_proxy_gateway_example_without_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the script's temporary folder goes here
    res = run("proxy_gateway.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (folder,) = tmp_path.glob("veilpix-proxy-*")
    assert (folder / "audit.db").is_file() and str(folder) in res.stdout


def test_intercept_proxy_example(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    out = tmp_path / "out"
    res = run("intercept_proxy.py", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "the photo: JPEG 640x480" in text and "GPS 48.85823, 2.29447, EXIF" in text
    assert "base URL https://api.openai.com/v1/ (unchanged)" in text
    (arrived,) = [line for line in text.splitlines() if line.strip().startswith("image:")]
    assert "no GPS, no EXIF, 0 metadata finding(s)" in arrived
    assert "Content-Usage: train-ai=n" in text and "intercepted=1" in text
    with AuditLog(out / "audit.db", readonly=True) as log:
        (rec,) = [r.to_dict() for r in log.records()]
    assert rec["outcome"] == "sent" and rec["who"]["door"] == "intercept"
    assert rec["where"]["host"] == "api.openai.com" and rec["id"][:8] in text
    assert b"sk-offline-example" not in (out / "audit.db").read_bytes()
    key = out / "ca" / "ca-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_find_images_example(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run("find_images.py", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "the photo: JPEG 320x240, GPS 48.85823, 2.29447" in text
    cleaned = [line for line in text.splitlines() if "where the photo was:" in line]
    assert len(cleaned) == 5 and all("no GPS, 0 finding(s)" in line for line in cleaned)
    assert "file name sent: file.jsonl" in text and "Jane_Doe" not in text
    assert "RequestBlocked: rule=image.unrewritable" in text
    assert "requests that reached the vendor: 0" in text
    with AuditLog(out / "audit.db", readonly=True) as log:
        records = [r.to_dict() for r in log.records()]
    assert [r["outcome"] for r in records] == ["sent"] * 5 + ["blocked"]
    assert [r["what"]["image_count"] for r in records[:5]] == [2, 1, 1, 1, 1]
    assert verify_log(out / "audit.db").ok
    bad = run("find_images.py", "a", "b", cwd=tmp_path)
    assert bad.returncode == 2 and "find_images.py" in bad.stderr


def test_hidden_data_example(tmp_path: Path) -> None:
    res = run("hidden_data.py", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("the payload is in the input:          True") == 2
    assert res.stdout.count("the payload is in veilpix's output:   False") == 2
    assert res.stdout.count("metadata a reader reports:            0 item(s)") == 2
    (tmp_path / "mine.jpg").write_bytes(F.jpeg())
    own = run("hidden_data.py", "mine.jpg", cwd=tmp_path)
    assert own.returncode == 0 and "output:   False" in own.stdout, own.stderr
    (tmp_path / "not.png").write_bytes(F.png())
    assert run("hidden_data.py", "not.png", cwd=tmp_path).returncode == 1


def test_log_integrity_example(tmp_path: Path) -> None:
    res = run("log_integrity.py", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "refused, nothing sent" in res.stdout and "entry 3 (begin)" in res.stdout
    assert "all steps behaved as described" in res.stdout
    assert "could not record" not in res.stderr  # a refusal is reported once, to its caller
    moved = list((tmp_path / "out").glob("audit.db.abandoned-*"))
    assert moved == [], moved  # the log was deleted, not moved: nothing to move aside


def test_compliance_console_example(tmp_path: Path) -> None:
    from veilpix._config import load_config

    res = run("compliance_console.py", "demo", "--transfers", "40", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "veilpix audit serve --log demo/audit.db --config demo/veilpix.toml" in res.stdout
    result = verify_log(tmp_path / "demo" / "audit.db")
    assert result.ok and result.records == 40
    config = load_config(tmp_path / "demo" / "veilpix.toml")
    assert config.register.controller == "Example Shop GmbH" and config.console.show_subjects
    with AuditLog(tmp_path / "demo" / "audit.db", readonly=True) as log:
        photo = (tmp_path / "demo" / "photo.jpg").read_bytes()
        assert len(log.with_image(photo)) == 1
    again = run("compliance_console.py", "demo", cwd=tmp_path)
    assert again.returncode == 1 and "exists already" in again.stderr


def test_fleet_log_example(tmp_path: Path, fleet_url: str) -> None:
    res = run("fleet_log.py", fleet_url, str(tmp_path / "fleet.key"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the photo was sent 3 times" in res.stdout
    assert "every step behaved as described" in res.stdout
    assert (tmp_path / "fleet.key").stat().st_mode & 0o777 == 0o600
