"""``veilpix.toml`` policy/apps/proxy sections, ``build_gateway``, ``veilpix config check`` and
``veilpix proxy`` (one real run as a subprocess). Loopback only."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

pytest.importorskip("uvicorn")

from servers import FakeVendor, Server
from veilpix import EEA, ConfigError, load_config, verify_log
from veilpix.cli._main import main
from veilpix.proxy import build_gateway

GOOD = """\
[log]
path = "logs/audit.db"

[policy]
allowed_countries = "EEA"
faces = "blur"
max_side = 2048
content_usage = false

[apps.design]
faces = "off"
allowed_vendors = ["openai"]
allowed_countries = ["de", "FR"]

[vendors.openai]
base_url = "http://127.0.0.1:9000/v1"

[vendors.anthropic]
base_url = "http://127.0.0.1:9001"

[proxy]
port = 9999
max_body = 1000
token_env = "MY_TOKEN"
"""


def write(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(text)
    return cfg


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VEILPIX_LOG", "VEILPIX_CONFIG", "VEILPIX_PROXY_TOKEN", "MY_TOKEN"):
        monkeypatch.delenv(name, raising=False)


# -- parsing -----------------------------------------------------------------------------------


def test_sections_parse_and_build_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    base = cfg.policy()
    assert base.faces == "blur" and base.max_side == 2048 and base.allowed_countries == EEA
    assert base.content_usage is None  # false: no header
    assert base.vendor_hosts == {"127.0.0.1:9000": "openai", "127.0.0.1:9001": "anthropic"}
    design = cfg.policy("design")
    assert design.faces == "off" and design.max_side == 2048  # override on top of [policy]
    assert design.allowed_vendors == {"openai"} and design.allowed_countries == {"DE", "FR"}
    assert cfg.proxy.port == 9999 and cfg.proxy.max_body == 1000 and cfg.proxy.host == "127.0.0.1"
    assert cfg.proxy.token is None
    monkeypatch.setenv("MY_TOKEN", "s3cret")
    assert cfg.proxy.token == "s3cret"
    assert cfg.log_path() == tmp_path / "logs" / "audit.db"
    monkeypatch.setenv("VEILPIX_LOG", str(tmp_path / "env.db"))
    assert cfg.log_path() == tmp_path / "env.db"
    with pytest.raises(ConfigError, match=r"no \[apps.nope\].*apps: design"):
        cfg.policy("nope")


def test_defaults_without_a_file() -> None:
    cfg = load_config(None)
    assert cfg.policy().faces == "off" and cfg.apps == {}
    assert cfg.proxy.port == 8787 and cfg.proxy.token_env == "VEILPIX_PROXY_TOKEN"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policy]\nfacez = 'blur'\n", "unknown setting policy.facez"),
        ("[policy]\nmax_side = '2048'\n", "policy.max_side must be a int"),
        ("[policy]\nhttps_only = 1\n", "policy.https_only must be a bool"),
        ("[policy]\nfaces = 'maybe'\n", "policy.faces must be 'off'"),
        ("[policy]\nallowed_countries = 'EU'\n", 'must be "EEA" or a list'),
        ("[policy]\nallowed_countries = ['Germany']\n", "'GERMANY' is not a two-letter"),
        ("[policy]\nallowed_countries = [49]\n", "must be a list of strings"),
        ("[policy]\nallowed_vendors = ['opnai']\n", "names no vendor veilpix knows: 'opnai'"),
        ("[policy]\nvendor_hosts = {'gw.local' = 'nobody'}\n", "'nobody' names no vendor"),
        ("[policy]\ncontent_usage = true\n", "header value or false"),
        ("[apps.x]\nquality = 0\n", "apps.x.quality must be None or a whole number"),
        ("[apps.x]\nbogus = 1\n", "unknown setting apps.x.bogus"),
        ("[apps.'bad name']\nfaces = 'off'\n", "app names are letters"),
        ("apps = 3\n", "veilpix.toml.apps must be a dict"),
        ("[apps]\nx = 3\n", r"apps.x must be a table"),
        ("[proxy]\nport = 70000\n", "proxy.port must be from 0 to 65535"),
        ("[proxy]\ntoken = 'abc'\n", "unknown setting proxy.token"),
        ("[proxy]\nallow_remote = 'yes'\n", "proxy.allow_remote must be a bool"),
        ("[proxy]\ntoken_env = 'not a var'\n", "must name an environment variable"),
        ("[vendors.nobody]\nbase_url = 'http://127.0.0.1:1'\n", "names no vendor"),
    ],
)
def test_bad_sections_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


# -- the gateway built from a config -------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[tuple[FakeVendor, Server]]:
    fake = FakeVendor()
    with Server(fake) as server:
        yield fake, server


def test_build_gateway_routes_and_the_app_header_picks_the_policy(
    tmp_path: Path, upstream: tuple[FakeVendor, Server]
) -> None:
    fake, vendor = upstream
    cfg = load_config(
        write(
            tmp_path,
            f'[vendors.openai]\nbase_url = "{vendor.url}/v1"\n'
            '[apps.claude-only]\nallowed_vendors = ["anthropic"]\n',
        )
    )
    gateway = build_gateway(cfg, log_path=tmp_path / "audit.db", token="tok")
    log = gateway.guards[""].log
    assert gateway.guards["claude-only"].log is log  # one log for every app
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    try:
        with Server(gateway) as proxy, httpx2.Client(base_url=proxy.url) as client:
            url = "/openai/chat/completions"
            assert client.post(url, json=body).status_code == 401  # no token
            ok = client.post(url, json=body, headers={"X-Veilpix-Token": "tok"})
            assert ok.status_code == 200 and ok.json() == {"ok": True}
            assert fake.last.path == "/v1/chat/completions"
            assert "x-veilpix-token" not in fake.last.headers
            blocked = client.post(
                url, json=body, headers={"X-Veilpix-Token": "tok", "X-Veilpix-App": "claude-only"}
            )
            assert blocked.status_code == 403
            assert "not among the allowed vendors" in blocked.json()["error"]["message"]
            assert len(fake.seen) == 1
        assert sorted(r.outcome for r in log.records()) == ["blocked", "sent"]
    finally:
        log.close()
    result = verify_log(tmp_path / "audit.db")
    assert result.ok and result.records == 2


# -- veilpix config check ------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_check_good(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, GOOD)
    code, out, _ = run(capsys, "config", "check", "--config", str(cfg))
    assert code == 0 and "valid" in out and str(tmp_path / "logs" / "audit.db") in out
    assert "app design: faces=off" in out and "$MY_TOKEN not set" in out
    code, out, _ = run(capsys, "config", "check", "--config", str(cfg), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["valid"] and doc["apps"]["design"]["allowed_vendors"] == ["openai"]
    assert doc["policy"]["vendor_hosts"]["127.0.0.1:9000"] == "openai"
    assert doc["proxy"]["token_set"] is False


def test_config_check_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, "[policy]\nfacez = 'blur'\n")
    code, _, err = run(capsys, "config", "check", "--config", str(cfg))
    assert code == 2 and "unknown setting policy.facez" in err
    code, out, _ = run(capsys, "config", "check", "--config", str(cfg), "--json")
    assert code == 2 and json.loads(out)["valid"] is False


def test_config_check_reads_the_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEILPIX_CONFIG", str(write(tmp_path, GOOD)))
    code, out, _ = run(capsys, "config", "check")
    assert code == 0 and "veilpix.toml: valid" in out


@pytest.mark.parametrize("argv", [["config", "check", "--help"], ["proxy", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "examples:" in out


def test_config_without_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 2


# -- veilpix proxy -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "localhost.localdomain", "127.0.0.1.nip.io"])
def test_proxy_refuses_remote_without_allow_remote(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only an IP loopback address or "localhost" counts: any other name resolves as the
    system says, so binding to it needs --allow-remote (and a token)."""
    code, _, err = run(capsys, "proxy", "--host", host)
    assert code == 2 and "not a loopback address" in err and "--allow-remote" in err


def test_proxy_refuses_allow_remote_without_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "proxy", "--host", "0.0.0.0", "--allow-remote")
    assert code == 2 and "needs a token" in err and "VEILPIX_PROXY_TOKEN" in err


def test_proxy_serves_and_stops_cleanly_on_sigterm(
    tmp_path: Path, upstream: tuple[FakeVendor, Server]
) -> None:
    fake, vendor = upstream
    cfg = write(tmp_path, f'[vendors.openai]\nbase_url = "{vendor.url}/v1"\n')
    log = tmp_path / "audit.db"
    env = {**os.environ, "VEILPIX_PROXY_TOKEN": "tok-never-printed"}
    env.pop("VEILPIX_CONFIG", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "veilpix",
            "proxy",
            "--port",
            "0",
            "--config",
            str(cfg),
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("veilpix proxy listening on http://127.0.0.1:"), first
        url = first.split()[-1]
        lines = [proc.stdout.readline() for _ in range(5)]
        assert any(f"OPENAI_BASE_URL={url}/openai" in line for line in lines), lines
        with httpx2.Client(base_url=url, timeout=10) as client:
            assert client.get("/_veilpix/health").json() == {"status": "ok"}
            sent = client.post(
                "/openai/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-Veilpix-Token": "tok-never-printed", "Authorization": "Bearer sk-x"},
            )
            assert sent.status_code == 200 and fake.last.headers["authorization"] == "Bearer sk-x"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert "tok-never-printed" not in out + err and "sk-x" not in out + err
    result = verify_log(log)
    assert result.ok and result.records == 1 and result.checkpoints >= 1


def test_proxy_port_in_use_is_a_clear_error(
    tmp_path: Path, upstream: tuple[FakeVendor, Server], capsys: pytest.CaptureFixture[str]
) -> None:
    _, vendor = upstream
    started = time.monotonic()
    code, _, err = run(capsys, "proxy", "--port", str(vendor.port), "--log", str(tmp_path / "a.db"))
    assert code == 2 and "could not start" in err and time.monotonic() - started < 10


def test_vendor_policy_overrides(tmp_path: Path) -> None:
    from veilpix import EEA, load_config

    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(
        '[policy]\nfaces = "blur"\n\n'
        '[vendors.openai.policy]\nallowed_countries = "EEA"\nregion = "eu"\n\n'
        '[apps.lab]\nfaces = "off"\n'
    )
    config = load_config(cfg)
    openai = config.vendor_policies()["openai"]
    assert openai.allowed_countries == EEA and openai.region == "eu" and openai.faces == "blur"
    lab = config.vendor_policies("lab")["openai"]
    assert lab.faces == "off" and lab.region == "eu"  # the app has the last word on its keys
    assert config.policy().allowed_countries is None
    bad = tmp_path / "bad.toml"
    bad.write_text('[vendors.openai.policy]\nregoin = "eu"\n')
    with pytest.raises(ConfigError, match=r"vendors\.openai\.policy\.regoin"):
        load_config(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "x"],
        ["--workers", "65"],
        ["--intercept-port", "70000"],
        ["--intercept-port", "9000"],
        ["--only-vendors"],
    ],
)
def test_proxy_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["proxy", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("workers" in err or "intercept" in err or "port" in err)


# -- what the calls are recorded as doing -------------------------------------------------------


def test_purpose_and_legal_basis_per_app(tmp_path: Path) -> None:
    toml = """
[record]
purpose = "product photos for the shop"
legal_basis = "contract"

[apps.campaign]
faces = "blur"
purpose = "campaign images"
legal_basis = "consent"

[apps.quiet]
faces = "off"
"""
    cfg = load_config(write(tmp_path, toml))
    assert cfg.record() == {"purpose": "product photos for the shop", "legal_basis": "contract"}
    assert cfg.record("campaign") == {"purpose": "campaign images", "legal_basis": "consent"}
    assert cfg.record("quiet") == cfg.record()  # inherits [record]
    assert cfg.policy("campaign").faces == "blur"  # the policy keys are still the app's


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[record]\nlegal_basis = 'because'\n", "must be one of GDPR Art. 6"),
        ("[record]\npurpose = ''\n", "record.purpose must be a short text"),
        ("[record]\nretention = '1y'\n", "unknown setting record.retention"),
        ("[apps.x]\nlegal_basis = 'vibes'\n", "apps.x.legal_basis must be one of"),
    ],
)
def test_bad_record_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


def test_record_headers_and_vendor_purposes_in_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = """
[record]
purpose = "support answers"
legal_basis = "contract"
headers = ["purpose", "legal_basis"]

[vendors.anthropic]
purpose = "claude drafts"
legal_basis = "legitimate_interests"

[apps.hr]
purpose = "hr photos"
record_headers = ["subject", "consent"]

[apps.locked]
record_headers = []

[apps.quiet]
faces = "off"
"""
    cfg = load_config(write(tmp_path, toml))
    assert cfg.allowed_record_headers() == {"purpose", "legal_basis"}  # none unless listed
    assert cfg.allowed_record_headers("hr") == {"subject", "consent"}  # the app's own list
    assert cfg.allowed_record_headers("locked") == frozenset()
    assert cfg.allowed_record_headers("quiet") == {"purpose", "legal_basis"}  # inherited
    # [record] < [vendors.<name>] < [apps.<name>]
    assert cfg.record(vendor="anthropic") == {
        "purpose": "claude drafts",
        "legal_basis": "legitimate_interests",
    }
    assert cfg.record("hr", vendor="anthropic") == {
        "purpose": "hr photos",
        "legal_basis": "legitimate_interests",
    }
    assert cfg.record("quiet", vendor="openai") == cfg.record()
    settings = cfg.record_settings("hr")
    assert settings.for_vendor("openai") == {"purpose": "hr photos", "legal_basis": "contract"}
    assert settings.for_vendor("anthropic")["purpose"] == "hr photos"
    assert main(["config", "check", "--config", str(cfg.source)]) == 0
    out = capsys.readouterr().out
    assert (
        "record: purpose 'support answers', legal_basis contract, X-Veilpix record headers: "
        "legal_basis, purpose" in out
    )
    assert (
        "app hr record: purpose 'hr photos', legal_basis contract, X-Veilpix record "
        "headers: consent, subject" in out
    )
    assert "vendor anthropic: purpose 'claude drafts'" in out
    assert main(["config", "check", "--config", str(cfg.source), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["record"]
    assert record["default"]["headers"] == ["legal_basis", "purpose"]
    assert record["apps"]["locked"]["headers"] == []


def test_no_record_headers_without_a_config() -> None:
    from veilpix._config import Config

    assert Config().allowed_record_headers() == frozenset()
    assert Config().record_settings().headers == frozenset()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[record]\nheaders = ['purpose', 'app']\n", "record.headers names no record header"),
        ("[record]\nheaders = 'purpose'\n", "record.headers must be a list"),
        ("[apps.x]\nrecord_headers = ['subject_ref']\n", "apps.x.record_headers names no"),
        ("[vendors.openai]\nlegal_basis = 'vibes'\n", "vendors.openai.legal_basis must be one"),
        ("[vendors.openai]\npurpose = ''\n", "vendors.openai.purpose must be a short text"),
        ("[vendors.openai]\nheaders = ['purpose']\n", "unknown setting vendors.openai.headers"),
    ],
)
def test_bad_record_header_settings_are_clear_errors(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


def test_the_gateway_records_each_apps_purpose_and_legal_basis(tmp_path: Path) -> None:
    """The register no longer says "not recorded" for every gateway call."""
    fake = FakeVendor()
    fake.reply = {"id": "resp_1", "output": []}
    with Server(fake) as upstream:
        toml = f"""
[record]
purpose = "support answers"
legal_basis = "contract"

[apps.campaign]
purpose = "campaign images"
legal_basis = "consent"

[vendors.openai]
base_url = "{upstream.url}/v1"
"""
        cfg = load_config(write(tmp_path, toml))
        gateway = build_gateway(cfg, log_path=tmp_path / "audit.db")
        log = gateway.guards[""].log
        try:
            with Server(gateway) as server:
                body = {"model": "gpt-4.1-mini", "input": "hello"}
                for app in ("", "campaign", "unknown-app"):
                    headers = {"X-Veilpix-App": app} if app else {}
                    resp = httpx2.post(
                        f"{server.url}/openai/responses", json=body, headers=headers, timeout=30
                    )
                    assert resp.status_code == 200, resp.text
            why = [(r.why["purpose"], r.why["legal_basis"]) for r in log.records()]
        finally:
            log.close()
    assert sorted(why) == sorted(
        [
            ("support answers", "contract"),
            ("campaign images", "consent"),
            ("support answers", "contract"),
        ]
    )
