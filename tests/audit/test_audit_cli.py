"""``veilpix audit`` and ``veilpix.toml``: every action, its --json, --help and bad arguments."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import factories
from auditkit import PHOTO, fill, transfer
from veilpix import AuditLog, ConfigError, load_config, verify_log
from veilpix.cli._main import main


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """Three months of traffic: sent, blocked, failed and one never finished."""
    now = [datetime.now(UTC) - timedelta(days=60)]
    path = tmp_path / "audit.db"
    with AuditLog(path, clock=lambda: now[0]) as log:
        fill(log, 3)  # openai, openai, gemini
        now[0] += timedelta(days=31)
        fill(log, 2, subject_ref="customer-4711")
        log.block(transfer(1, app="crm"), reason="vendor not allowed", rule="vendors.allowed")
        log.begin(transfer(2)).fail("ConnectError: connection refused")
        now[0] = datetime.now(UTC)
        log.begin(transfer(4))  # in flight forever: outcome unknown
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out = run(capsys, *argv, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.mark.parametrize(
    "action",
    [
        "",
        "verify",
        "list",
        "show",
        "stats",
        "export",
        "report",
        "erase",
        "prune",
        "key",
        "checkpoint",
    ],
)
def test_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["audit", *([action] if action else []), "--help"])
    assert info.value.code == 0
    assert "usage: veilpix audit" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "list", "--since", "last tuesday"],
        ["audit", "list", "--outcome", "maybe"],
        ["audit", "list", "--limit", "-1"],
        ["audit", "export"],
        ["audit", "export", "--format", "xml"],
        ["audit", "erase"],
        ["audit", "report"],
        ["audit", "frobnicate"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_errors_are_clear(
    tmp_path: Path, log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "list", "--log", str(tmp_path / "none.db")]) == 2
    assert "no transfer log at" in capsys.readouterr().err
    assert main(["audit", "show", "--log", str(log_path), "ffffffff"]) == 2
    assert "no transfer 'ffffffff'" in capsys.readouterr().err
    assert main(["audit", "prune", "--log", str(log_path)]) == 2
    assert "--older-than" in capsys.readouterr().err
    assert main(["audit", "prune", "--log", str(log_path), "--older-than", "soon"]) == 2
    # Destructive actions need --yes when nobody can be asked.
    assert main(["audit", "erase", "--log", str(log_path), "--subject", "customer-4711"]) == 2
    assert "--yes" in capsys.readouterr().err


def test_list_filters(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("audit", "list", "--log", str(log_path))
    everything = run_json(capsys, *base)
    assert isinstance(everything, list) and len(everything) == 8
    assert everything[0]["outcome"] == "unknown"  # newest first
    assert {r["outcome"] for r in everything} == {"sent", "blocked", "failed", "unknown"}
    assert len(run_json(capsys, *base, "--vendor", "gemini")) == 2  # type: ignore[arg-type]
    assert len(run_json(capsys, *base, "--country", "nl")) == 2  # type: ignore[arg-type]
    assert len(run_json(capsys, *base, "--outcome", "unknown")) == 1  # type: ignore[arg-type]
    assert len(run_json(capsys, *base, "--app", "crm")) == 1  # type: ignore[arg-type]
    assert len(run_json(capsys, *base, "--host", "API.openai.com")) == 8  # type: ignore[arg-type]
    assert len(run_json(capsys, *base, "--since", "45d")) == 5  # type: ignore[arg-type]
    assert len(run_json(capsys, *base, "--until", "45d")) == 3  # type: ignore[arg-type]
    assert len(run_json(capsys, *base, "--subject", "customer-4711")) == 2  # type: ignore[arg-type]
    assert len(run_json(capsys, *base, "--limit", "2")) == 2  # type: ignore[arg-type]
    code, table = run(capsys, *base)
    assert code == 0 and "outcome unknown" in table and "8 of 8 transfers" in table


def test_list_by_image_file(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO)
    other = tmp_path / "other.png"
    other.write_bytes(factories.png())
    base = ("audit", "list", "--log", str(log_path))
    assert len(run_json(capsys, *base, "--image", str(photo))) == 8  # type: ignore[arg-type]
    assert run_json(capsys, *base, "--image", str(other)) == []


def test_show(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "audit", "list", "--log", str(log_path), "--outcome", "blocked")
    rid = rows[0]["id"]  # type: ignore[index]
    shown = run_json(capsys, "audit", "show", "--log", str(log_path), rid[:8])
    assert shown["id"] == rid and shown["rule"] == "vendors.allowed"  # type: ignore[index]
    code, text = run(capsys, "audit", "show", "--log", str(log_path), rid)
    assert code == 0 and "vendors.allowed" in text and "images" in text


def test_stats(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "audit", "stats", "--log", str(log_path))
    assert isinstance(rows, list)
    assert sum(r["calls"] for r in rows) == 8
    assert sum(r["blocked"] for r in rows) == 1 and sum(r["unknown"] for r in rows) == 1
    assert sum(r["images"] for r in rows) == 7  # the blocked call sent nothing
    assert {(r["vendor"], r["country"]) for r in rows} == {("openai", "US"), ("gemini", "NL")}
    assert len({r["month"] for r in rows}) >= 2
    code, text = run(capsys, "audit", "stats", "--log", str(log_path))
    assert code == 0 and "openai" in text


def test_verify_key_and_checkpoint(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(capsys, "audit", "verify", "--log", str(log_path))
    assert result["ok"] and result["records"] == 8 and result["pending"] == 1  # type: ignore[index]
    pem = tmp_path / "pub.pem"
    assert main(["audit", "key", "--log", str(log_path), "-o", str(pem)]) == 0
    assert pem.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    code, text = run(capsys, "audit", "verify", "--log", str(log_path), "--public-key", str(pem))
    assert code == 0 and "OK" in text
    assert main(["audit", "verify", "--log", str(log_path), "--public-key", str(tmp_path)]) == 2
    assert run_json(capsys, "audit", "checkpoint", "--log", str(log_path)) == {"checkpoint": None}


def test_erase(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("audit", "erase", "--log", str(log_path), "--subject", "customer-4711", "--yes")
    done = run_json(capsys, *argv, "--request", "DSR-1")
    assert done["records"] == 2  # type: ignore[index]
    assert (
        run_json(capsys, "audit", "list", "--log", str(log_path), "--subject", "customer-4711")
        == []
    )
    code, text = run(capsys, *argv)
    assert code == 0 and "no transfers linked" in text
    assert verify_log(log_path).ok


def test_prune(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("audit", "prune", "--log", str(log_path), "--older-than", "45d")
    assert run_json(capsys, *base, "--dry-run")["records"] == 3  # type: ignore[index]
    assert verify_log(log_path).records == 8  # a dry run changes nothing
    assert run_json(capsys, *base, "--yes")["records"] == 3  # type: ignore[index]
    result = verify_log(log_path)
    assert result.ok and result.records == 5


def test_config_file_names_the_log_mechanisms_and_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(
        '[log]\npath = "logs/transfers.db"\ncheckpoint_every = 3\nretention = "30d"\n\n'
        '[vendors.gemini]\ntransfer_mechanism = "SCCs module 2"\n'
    )
    monkeypatch.delenv("VEILPIX_LOG", raising=False)
    with AuditLog.from_config(cfg) as log:
        assert log.path == tmp_path / "logs" / "transfers.db"
        fill(log, 3, transfer_mechanism=None)
    rows = run_json(capsys, "audit", "list", "--config", str(cfg), "--vendor", "gemini")
    assert rows[0]["where"]["transfer_mechanism"] == "SCCs module 2"  # type: ignore[index]
    monkeypatch.setenv("VEILPIX_CONFIG", str(cfg))
    dry = run_json(capsys, "audit", "prune", "--dry-run")  # log and retention from the config
    assert dry["records"] == 0 and dry["cutoff"] < datetime.now(UTC).isoformat()  # type: ignore[index]
    assert verify_log(tmp_path / "logs" / "transfers.db").checkpoints >= 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[log]\npath = 3\n", "log.path must be a str"),
        ("[log]\ncheckpoint_every = true\n", "must be a number"),
        ("[log]\npaht = 'x'\n", "unknown setting log.paht"),
        ("[logs]\n", "unknown setting veilpix.toml.logs"),
        ("[log]\nretention = 'forever'\n", "cannot read the age"),
        ("[vendors.openai]\nmechanism = 'SCC'\n", "unknown setting vendors.openai.mechanism"),
        ("[vendors.opnai]\ntransfer_mechanism = 'SCC'\n", "names no vendor"),
        ("[vendors.azure]\nbase_url = 'ftp://x'\n", "must be an http"),
        ("[log\n", "not valid TOML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_config_base_urls_map_hosts_to_vendors(tmp_path: Path) -> None:
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(
        '[vendors.azure]\nbase_url = "https://res1.openai.azure.com/openai/v1"\n'
        '[vendors.openai]\nbase_url = "http://127.0.0.1:9000/v1"\n'
    )
    loaded = load_config(cfg)
    assert loaded.vendor_hosts == {"res1.openai.azure.com": "azure", "127.0.0.1:9000": "openai"}
    assert loaded.base_urls["openai"] == "http://127.0.0.1:9000/v1"


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml")


def test_audit_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit"]) == 2
    assert "verify" in capsys.readouterr().out


def test_show_prompt_when_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from auditkit import PROMPT

    path = tmp_path / "a.db"
    with AuditLog(path, encrypt_prompts=True) as log:
        (kept,) = fill(log, 1)
    with AuditLog(path) as log:
        (plain,) = fill(log, 1)
    base = ("audit", "show", "--log", str(path), "--prompt")
    assert run_json(capsys, *base, kept)["what"]["prompt_text"] == PROMPT  # type: ignore[index]
    assert run_json(capsys, *base, plain)["what"]["prompt_text"] is None  # type: ignore[index]
    code, text = run(capsys, *base, plain)
    assert code == 0 and "not kept" in text


def test_values_print_as_written_not_as_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.db"
    with AuditLog(path) as log:
        (rid,) = fill(log, 1, app="[bold]crm[/bold]")
    code, listed = run(capsys, "audit", "list", "--log", str(path))
    assert code == 0 and "[bold]crm[/bold]" in listed
    code, shown = run(capsys, "audit", "show", "--log", str(path), rid)
    assert "key=[redacted]" in shown and "[bold]crm[/bold]" in shown


def test_resolve_an_unknown_outcome(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("audit", "list", "--log", str(log_path))
    (pending,) = run_json(capsys, *base, "--outcome", "unknown")  # type: ignore[misc]
    done = run_json(
        capsys,
        "audit",
        "resolve",
        "--log",
        str(log_path),
        pending["id"][:8],
        "--outcome",
        "failed",
        "--reason",
        "vendor dashboard shows nothing",
    )
    assert done == {"id": pending["id"], "outcome": "failed"}
    assert run_json(capsys, *base, "--outcome", "unknown") == []
    shown = run_json(capsys, "audit", "show", "--log", str(log_path), pending["id"])
    assert shown["reason"] == "resolved by operator: vendor dashboard shows nothing"  # type: ignore[index]
    assert (
        main(
            [
                "audit",
                "resolve",
                "--log",
                str(log_path),
                pending["id"],
                "--outcome",
                "sent",
                "--reason",
                "x",
            ]
        )
        == 2
    )
    assert "already has an outcome" in capsys.readouterr().err
    assert verify_log(log_path).ok


def test_exports_are_private_and_leave_subjects_sealed(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.jsonl"
    base = ("audit", "export", "--log", str(log_path), "--format", "jsonl", "-o", str(out))
    assert main([*base]) == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert "customer-4711" not in out.read_text()
    assert main([*base, "--include-subjects"]) == 0
    assert "customer-4711" in out.read_text()
    page = tmp_path / "r.html"
    assert main(["audit", "report", "--log", str(log_path), "-o", str(page)]) == 0
    assert oct(page.stat().st_mode & 0o777) == "0o600" and "customer-4711" not in page.read_text()


def test_report_exit_code_follows_integrity(log_path: Path, tmp_path: Path) -> None:
    from auditkit import raw

    raw(log_path).execute("UPDATE entries SET body=replace(body, 'shop', 'shap') WHERE seq=3")
    assert main(["audit", "report", "--log", str(log_path), "-o", str(tmp_path / "r.html")]) == 1
    assert (tmp_path / "r.html").stat().st_size > 1000  # still written, showing the problem


def test_key_file_kept_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, key = tmp_path / "a.db", tmp_path / "vault" / "a.key"
    with AuditLog(path, key_path=key) as log:
        fill(log, 1, subject_ref="s-1")
    assert not (tmp_path / "a.db.key").exists()
    rows = run_json(capsys, "audit", "list", "--log", str(path), "--key", str(key))
    assert rows[0]["why"]["subject_ref"] == "s-1"  # type: ignore[index]
    rows = run_json(capsys, "audit", "list", "--log", str(path))  # no key at hand: sealed
    assert rows[0]["why"]["subject_ref"] == "[sealed]"  # type: ignore[index]
    code, said = run(
        capsys, "audit", "erase", "--log", str(path), "--key", str(key), "--subject", "s-1", "-y"
    )
    assert code == 0 and "erased the subject-linked fields of 1 transfer" in said
    rows = run_json(capsys, "audit", "list", "--log", str(path))  # erased, even without the key
    assert rows[0]["why"]["subject_ref"] == "[erased]"  # type: ignore[index]


@pytest.mark.parametrize("action", ["report", "export", "key"])
def test_unwritable_output_is_a_clear_error(
    action: str, log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audit", action, "--log", str(log_path), "-o", str(tmp_path / "no" / "such" / "f")]
    if action == "export":
        argv += ["--format", "csv"]
    assert main(argv) == 2
    assert "cannot write" in capsys.readouterr().err


def test_key_options_fail_loudly(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "list", "--log", str(log_path), "--key", str(tmp_path / "nope.key")]) == 2
    assert "no key file" in capsys.readouterr().err
    moved = tmp_path / "moved.key"
    Path(f"{log_path}.key").rename(moved)
    argv = ["audit", "export", "--log", str(log_path), "--format", "jsonl", "--include-subjects"]
    assert main(argv) == 2
    assert "--key" in capsys.readouterr().err
    assert main([*argv, "--key", str(moved)]) == 0
    assert "customer-4711" in capsys.readouterr().out


def test_env_names_the_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEILPIX_LOG", str(tmp_path / "a.db"))
    monkeypatch.setenv("VEILPIX_LOG_KEY", str(tmp_path / "vault" / "a.key"))
    AuditLog().close()
    assert (tmp_path / "vault" / "a.key").is_file() and not (tmp_path / "a.db.key").exists()


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[1, 2]",
        '{"what": "x"}',
        '{"what": {"images": [3]}}',
        '{"what": {"images": [{"faces_blurred": "many"}], "bytes_before": "a lot"}}',
    ],
)
@pytest.mark.parametrize("action", ["list", "stats", "export", "report"])
def test_altered_rows_give_a_clear_error(
    body: str, action: str, log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from auditkit import raw

    raw(log_path).execute("UPDATE entries SET body=? WHERE seq=3", (body,))
    argv = ["audit", action, "--log", str(log_path)]
    argv += {"export": ["--format", "csv"], "report": ["-o", str(tmp_path / "r.html")]}.get(
        action, []
    )
    code = main(argv)
    err = capsys.readouterr().err
    if code == 0:  # a value veilpix can still show as text is shown; verify catches the edit
        assert action in ("list", "export") and verify_log(log_path).intact is False
    else:
        assert code in (1, 2) and "veilpix audit verify" in err


def test_show_names_the_file_name_an_image_was_sent_under(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from auditkit import CLEAN, PHOTO, transfer
    from veilpix import AuditLog, OutboundImage

    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        image = OutboundImage(PHOTO, CLEAN, "image", filename="image-2.jpg")
        pending = log.begin(transfer(1, images=[image]))
        pending.finish(status=200)
    code, text = run(capsys, "audit", "show", "--log", str(path), pending.id)
    assert code == 0 and "sent as" in text and "image-2.jpg" in text
