"""Exports of the transfer log: CSV for spreadsheets (with the formula-injection guard), JSON
Lines that round-trip ``to_dict()``, and OCSF 1.6.0 API Activity events (class 6003) with
every attribute the class requires. No credential or prompt may reach any of them."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import factories
import veilpix
from veilpix._errors import ConfigError
from veilpix.audit._export import (
    CSV_COLUMNS,
    EXPORT_FORMATS,
    OCSF_VERSION,
    _cell,
    export,
    flat_row,
    ocsf_event,
)
from veilpix.audit._log import AuditLog
from veilpix.audit._record import OutboundImage, Transfer
from veilpix.audit._records import TransferRecord, summarize

OPENAI_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345"
GOOGLE_KEY = "AIzaSyA1234567890abcdefghijklmnopqrstu"
PROMPT = "Retouch the portrait of Jane Doe, remove the scar on her left cheek"
T0 = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.fixture(scope="module")
def images() -> tuple[OutboundImage, OutboundImage]:
    """A photo sent unchecked for faces, and one whose (simulated) check found 3 faces and
    blurred 2: the face model is not needed for what the log records."""
    original = factories.jpeg()
    clean = veilpix.sanitize(original)
    faced = dataclasses.replace(
        clean,
        report=dataclasses.replace(
            clean.report, faces_checked=True, faces_found=3, faces_blurred=2
        ),
    )
    return OutboundImage(original, clean, "image"), OutboundImage(original, faced, "mask")


def transfer(images: tuple[OutboundImage, OutboundImage], /, **overrides: Any) -> Transfer:
    fields: dict[str, Any] = {
        "vendor": "openai",
        "url": f"https://api.openai.com/v1/images/edits?key={GOOGLE_KEY}&quality=high",
        "legal_entity": "OpenAI Ireland Ltd",
        "country": "us",
        "transfer_mechanism": "adequacy decision (EU-US DPF)",
        "app": "crm",
        "actor": "alice@example.com",
        "purpose": "product photo retouching",
        "legal_basis": "Art. 6(1)(b)",
        "images": list(images),
        "prompt": PROMPT,
        "headers": {
            "Authorization": f"Bearer {OPENAI_KEY}",
            "User-Agent": "crm/2.1",
            "X-Trace": f"key {OPENAI_KEY}",
        },
        "controls_applied": ["zero data retention"],
        "controls_account_level": ["no training"],
    }
    fields.update(overrides)
    return Transfer(**fields)


@pytest.fixture(scope="module")
def records(
    tmp_path_factory: pytest.TempPathFactory, images: tuple[OutboundImage, OutboundImage]
) -> dict[str, TransferRecord]:
    """One record of each kind, by name, read back from a real log."""
    now = [T0]

    def clock() -> datetime:
        now[0] += timedelta(milliseconds=250)
        return now[0]

    path = tmp_path_factory.mktemp("export") / "audit.db"
    ids: dict[str, str] = {}
    with AuditLog(path, clock=clock) as log:
        p = log.begin(transfer(images, client="10.0.0.7:5123", door="gateway", subject_ref="s1"))
        p.finish(status=200, response_bytes=1234, request_bytes=9000, vendor_request_id="req_1")
        ids["sent"] = p.id
        ids["blocked"] = log.block(
            transfer(images, vendor="acme", app="@SUM(1+1)*cmd|' /C calc'!A0", country="CN"),
            reason='=HYPERLINK("https://evil.example","click")',
            rule="vendors.allowed",
        )
        p = log.begin(transfer(images, method="DELETE", images=[]))
        p.fail("ConnectTimeout: the vendor did not answer")
        ids["failed"] = p.id
        ids["pending"] = log.begin(transfer(images, method="GET", country=None, app=None)).id
        p = log.begin(transfer(images, method="PUT", images=images[:1]))
        p.finish(status=500, reason="-1+1 upstream error")
        ids["error"] = p.id
        p = log.begin(transfer(images, method="OPTIONS", client="[2001:db8::1]:443"))
        p.finish(status=204)
        ids["other"] = p.id
    with AuditLog(path, readonly=True) as log:
        by_id = {rec.id: rec for rec in log.records()}
    return {name: by_id[rid] for name, rid in ids.items()}


def run(records: list[TransferRecord], fmt: str) -> tuple[int, str]:
    out = io.StringIO(newline="")
    n = export(iter(records), fmt, out, product_version="9.9.9")
    return n, out.getvalue()


# -- all formats ---------------------------------------------------------------------------------


def test_formats_and_unknown_format(records: dict[str, TransferRecord]) -> None:
    assert EXPORT_FORMATS == ("csv", "jsonl", "ocsf")
    with pytest.raises(ConfigError, match="xml"):
        export([], "xml", io.StringIO(), product_version="1")


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_no_credentials_or_prompts_in_any_export(
    records: dict[str, TransferRecord], fmt: str
) -> None:
    n, text = run(list(records.values()), fmt)
    assert n == len(records)
    for secret in (OPENAI_KEY, GOOGLE_KEY, "sk-proj", "AIza", "Bearer", PROMPT, "Jane Doe", "scar"):
        assert secret not in text, f"{secret!r} leaked into the {fmt} export"


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_streams_one_record_at_a_time(records: dict[str, TransferRecord], fmt: str) -> None:
    """Each record is written before the next one is read: nothing is collected first."""
    pulled = 0

    def feed() -> Iterator[TransferRecord]:
        nonlocal pulled
        for rec in records.values():
            pulled += 1
            yield rec

    class Watch(io.StringIO):
        def write(self, s: str) -> int:
            rows = self.getvalue().count("\n") - (fmt == "csv")  # less the CSV header
            assert pulled <= rows + 1
            return super().write(s)

    assert export(feed(), fmt, Watch(newline=""), product_version="1") == pulled == len(records)


def test_empty_export() -> None:
    assert run([], "jsonl") == (0, "")
    assert run([], "ocsf") == (0, "")
    n, text = run([], "csv")
    assert n == 0
    assert text == ",".join(CSV_COLUMNS) + "\r\n"


# -- CSV -----------------------------------------------------------------------------------------


def test_csv_has_one_row_per_record_with_the_right_values(
    records: dict[str, TransferRecord],
) -> None:
    _, text = run(list(records.values()), "csv")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = {row["id"]: row for row in reader}
    assert len(rows) == len(records)

    sent = rows[records["sent"].id]
    assert sent["begun"] == records["sent"].begun
    assert sent["finished"] == records["sent"].finished
    assert (sent["outcome"], sent["status"], sent["rule"]) == ("sent", "200", "allowed")
    assert (sent["app"], sent["actor"], sent["door"]) == ("crm", "alice@example.com", "gateway")
    assert (sent["client"], sent["vendor"], sent["country"]) == ("10.0.0.7:5123", "openai", "US")
    assert sent["legal_entity"] == "OpenAI Ireland Ltd"
    assert sent["transfer_mechanism"] == "adequacy decision (EU-US DPF)"
    assert (sent["method"], sent["host"]) == ("POST", "api.openai.com")
    assert sent["url"] == "https://api.openai.com/v1/images/edits?key=[redacted]&quality=high"
    assert (sent["purpose"], sent["legal_basis"]) == ("product photo retouching", "Art. 6(1)(b)")
    assert (sent["consent"], sent["subject"]) == ("false", "open")
    assert (sent["images"], sent["faces_found"], sent["faces_blurred"]) == ("2", "3", "2")
    assert (sent["faces_unblurred"], sent["images_faces_unchecked"]) == ("1", "1")
    assert sent["images_downscaled"] == "0"
    assert int(sent["bytes_before"]) == 2 * len(factories.jpeg())
    assert sent["bytes_sent"] == "9000"  # the request size the door reported
    assert sent["metadata_found"].startswith("gps;location;device;serial;owner")
    assert "face image (unblurred)" in sent["data_categories"].split(";")
    assert "prompt text" in sent["data_categories"].split(";")
    assert sent["controls_applied"] == "zero data retention"
    assert sent["controls_account_level"] == "no training"
    assert sent["controls_unavailable"] == ""
    assert (sent["response_bytes"], sent["request_bytes"]) == ("1234", "9000")
    assert sent["vendor_request_id"] == "req_1"
    assert float(sent["latency_ms"]) >= 0
    assert sent["retention"] == "standard"

    blocked = rows[records["blocked"].id]
    assert (blocked["outcome"], blocked["status"], blocked["rule"]) == (
        "blocked",
        "",
        "vendors.allowed",
    )
    assert blocked["bytes_sent"] == "0"  # nothing left
    assert blocked["images"] == "2"  # but the call carried two

    pending = rows[records["pending"].id]
    assert (pending["outcome"], pending["finished"], pending["country"]) == ("unknown", "", "")
    assert rows[records["failed"].id]["reason"] == "ConnectTimeout: the vendor did not answer"
    assert rows[records["failed"].id]["faces_found"] == ""  # no image: nothing to count


def test_face_counts_of_unchecked_images_are_unknown_not_zero(
    records: dict[str, TransferRecord],
) -> None:
    """The "error" call sent only the photo never checked for faces: how many faces it held,
    and so how many were blurred or sent unblurred, is unknown (empty, null), not 0."""
    _, text = run(list(records.values()), "csv")
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}
    error = rows[records["error"].id]
    assert (error["images"], error["images_faces_unchecked"]) == ("1", "1")
    assert (error["faces_found"], error["faces_blurred"], error["faces_unblurred"]) == ("", "", "")
    row = flat_row(records["error"])
    assert row["faces_found"] is row["faces_blurred"] is row["faces_unblurred"] is None
    unmapped = ocsf_event(records["error"], product_version="1")["unmapped"]
    assert not {"faces_found", "faces_blurred", "faces_unblurred"} & unmapped.keys()
    assert unmapped["images_faces_unchecked"] == 1


def test_blocked_call_sent_no_unchecked_image(records: dict[str, TransferRecord]) -> None:
    """A blocked call sent nothing, so no image left without a face check (as stats counts)."""
    _, text = run(list(records.values()), "csv")
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}
    blocked = rows[records["blocked"].id]
    assert (blocked["images"], blocked["images_faces_unchecked"]) == ("2", "0")
    stats = summarize([records["blocked"]])[0]
    assert stats.images_unchecked == flat_row(records["blocked"])["images_faces_unchecked"] == 0
    # the facts about the images themselves stay: the checked one held 3 faces, 2 blurred
    assert (blocked["faces_found"], blocked["faces_blurred"], blocked["faces_unblurred"]) == (
        "3",
        "2",
        "1",
    )
    for name in ("sent", "error", "other"):  # and calls that were not blocked agree with stats
        stats = summarize([records[name]])[0]
        row = flat_row(records[name])
        assert row["images_faces_unchecked"] == stats.images_unchecked == 1


def test_csv_neutralises_formulas(records: dict[str, TransferRecord]) -> None:
    _, text = run(list(records.values()), "csv")
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}
    blocked = rows[records["blocked"].id]
    assert blocked["app"] == "'@SUM(1+1)*cmd|' /C calc'!A0"
    assert blocked["reason"] == '\'=HYPERLINK("https://evil.example","click")'
    assert rows[records["error"].id]["reason"] == "'-1+1 upstream error"
    for row in rows.values():  # no cell a spreadsheet would evaluate
        for value in row.values():
            assert value[:1] not in ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("  =1", "'  =1"),
        ("\uff1d1+1", "'\uff1d1+1"),
        (["=a", "b"], "'=a;b"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        (-3, "-3"),  # numbers are numbers, not formulas
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        ([], ""),
    ],
)
def test_csv_cell(value: Any, cell: str) -> None:
    assert _cell(value) == cell


# -- JSON Lines ----------------------------------------------------------------------------------


def test_jsonl_round_trips_to_dict(records: dict[str, TransferRecord]) -> None:
    recs = list(records.values())
    _, text = run(recs, "jsonl")
    lines = text.split("\n")
    assert lines.pop() == ""
    assert len(lines) == len(recs)
    for line, rec in zip(lines, recs, strict=True):
        doc = json.loads(line)
        assert doc == rec.to_dict()
        assert line == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_jsonl_keeps_unicode() -> None:
    rec = TransferRecord(
        id="r", seq=1, begun="2025-01-01T00:00:00.000000Z", begin={"who": {"app": "Bücher—Ω"}}
    )
    _, text = run([rec], "jsonl")
    assert "Bücher—Ω" in text


# -- OCSF ----------------------------------------------------------------------------------------

# (attribute, type) that OCSF 1.6.0 requires of an API Activity event: the base event's and the
# class's own (actor, api, src_endpoint), plus what the objects used require.
REQUIRED: list[tuple[str, type | tuple[type, ...]]] = [
    ("activity_id", int),
    ("category_uid", int),
    ("class_uid", int),
    ("metadata", dict),
    ("metadata.product", dict),
    ("metadata.product.vendor_name", str),
    ("metadata.version", str),
    ("severity_id", int),
    ("time", int),
    ("type_uid", int),
    ("actor", dict),
    ("api", dict),
    ("api.operation", str),
    ("api.request.uid", str),
    ("src_endpoint", dict),
]
RECOMMENDED: list[tuple[str, type]] = [
    ("activity_name", str),
    ("category_name", str),
    ("class_name", str),
    ("type_name", str),
    ("message", str),
    ("status", str),
    ("status_id", int),
    ("timezone_offset", int),
    ("dst_endpoint", dict),
    ("http_request", dict),
    ("metadata.uid", str),
    ("metadata.log_name", str),
    ("metadata.original_time", str),
    ("metadata.product.name", str),
    ("metadata.product.version", str),
]


def attr(event: dict[str, Any], dotted: str) -> Any:
    value: Any = event
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"{dotted} is missing"
        value = value[part]
    return value


@pytest.fixture(scope="module")
def events(records: dict[str, TransferRecord]) -> dict[str, dict[str, Any]]:
    _, text = run(list(records.values()), "ocsf")
    parsed = [json.loads(line) for line in text.splitlines()]
    return dict(zip(records, parsed, strict=True))


def test_ocsf_required_attributes_and_types(events: dict[str, dict[str, Any]]) -> None:
    for name, event in events.items():
        for dotted, kind in REQUIRED + RECOMMENDED:
            value = attr(event, dotted)
            assert isinstance(value, kind) and not isinstance(value, bool), (name, dotted)
        assert event["class_uid"] == 6003
        assert event["class_name"] == "API Activity"
        assert event["category_uid"] == 6
        assert event["category_name"] == "Application Activity"
        assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
        assert event["type_name"].startswith("API Activity: ")
        assert event["metadata"]["version"] == OCSF_VERSION == "1.6.0"
        assert event["metadata"]["product"] == {
            "name": "veilpix",
            "vendor_name": "veilpix",
            "version": "9.9.9",
        }
        assert event["metadata"]["log_name"] == "veilpix transfer log"
        assert event["metadata"]["profiles"] == ["security_control"]
        assert event["severity_id"] in (1, 2, 3)
        assert event["status_id"] in (0, 1, 2)
        assert event["action_id"] in (1, 2) and event["disposition_id"] in (1, 2)
        # constraints of the objects: actor and network endpoints need at least one of these
        assert {"app_name", "user", "process", "session", "app_uid"} & event["actor"].keys()
        for end in ("src_endpoint", "dst_endpoint"):
            assert {"ip", "uid", "name", "hostname", "svc_name"} & event[end].keys()
        if "http_response" in event:
            assert isinstance(event["http_response"]["code"], int)
        if "end_time" in event:
            assert event["duration"] == event["end_time"] - event["time"] >= 0
        assert event["metadata"]["uid"] == event["api"]["request"]["uid"]


def test_ocsf_times_are_epoch_milliseconds(
    records: dict[str, TransferRecord], events: dict[str, dict[str, Any]]
) -> None:
    sent = events["sent"]
    begun = datetime.fromisoformat(records["sent"].begun.replace("Z", "+00:00"))
    assert sent["time"] == sent["start_time"] == int(begun.timestamp() * 1000)
    assert sent["time"] > int(T0.timestamp() * 1000)
    assert sent["metadata"]["original_time"] == records["sent"].begun
    assert sent["end_time"] > sent["time"]
    assert sent["timezone_offset"] == 0


def test_ocsf_sent(events: dict[str, dict[str, Any]], records: dict[str, TransferRecord]) -> None:
    e = events["sent"]
    assert (e["activity_id"], e["activity_name"], e["type_uid"]) == (1, "Create", 600301)
    assert (e["status_id"], e["status"], e["status_code"]) == (1, "Success", "200")
    assert (e["severity_id"], e["severity"]) == (1, "Informational")
    assert (e["disposition_id"], e["disposition"], e["action"]) == (1, "Allowed", "Allowed")
    assert e["http_response"] == {"code": 200}
    assert e["api"]["response"] == {"code": 200}
    assert e["api"]["service"] == {"name": "openai"}
    assert e["api"]["request"]["uid"] == records["sent"].id
    assert e["api"]["operation"] == "POST /v1/images/edits"
    assert e["actor"] == {"app_name": "crm", "user": {"name": "alice@example.com"}}
    assert e["src_endpoint"] == {"svc_name": "veilpix gateway", "ip": "10.0.0.7", "port": 5123}
    assert e["dst_endpoint"] == {"hostname": "api.openai.com", "location": {"country": "US"}}
    url = e["http_request"]["url"]
    assert url["url_string"] == "https://api.openai.com/v1/images/edits?key=[redacted]&quality=high"
    assert (url["scheme"], url["hostname"], url["path"]) == (
        "https",
        "api.openai.com",
        "/v1/images/edits",
    )
    assert url["query_string"] == "key=[redacted]&quality=high"
    assert e["http_request"]["http_method"] == "POST"
    assert e["http_request"]["user_agent"] == "crm/2.1"
    assert "http_headers" not in e["http_request"]
    kinds = {o["type_id"]: o["value"] for o in e["observables"]}
    assert kinds == {
        1: "api.openai.com",
        2: "10.0.0.7",
        4: "alice@example.com",
        6: url["url_string"],
    }
    u = e["unmapped"]
    assert (u["outcome"], u["legal_entity"], u["purpose"]) == (
        "sent",
        "OpenAI Ireland Ltd",
        "product photo retouching",
    )
    assert (u["transfer_mechanism"], u["legal_basis"]) == (
        "adequacy decision (EU-US DPF)",
        "Art. 6(1)(b)",
    )
    assert (u["images"], u["faces_found"], u["faces_blurred"], u["faces_unblurred"]) == (2, 3, 2, 1)
    assert (u["bytes_sent"], u["vendor_request_id"], u["subject"]) == (9000, "req_1", "open")
    assert u["controls_applied"] == ["zero data retention"]
    assert not {"id", "vendor", "url", "host", "status", "app", "actor"} & u.keys()
    assert e["message"] == "POST api.openai.com (openai): sent, HTTP 200, 2 images"


def test_ocsf_blocked(events: dict[str, dict[str, Any]]) -> None:
    e = events["blocked"]
    assert (e["disposition_id"], e["disposition"]) == (2, "Blocked")
    assert (e["action_id"], e["action"]) == (2, "Denied")
    assert (e["status_id"], e["status"]) == (2, "Failure")
    assert e["severity_id"] == 2
    assert e["status_detail"] == '=HYPERLINK("https://evil.example","click")'
    assert e["policy"] == {"name": "vendors.allowed"}
    assert "http_response" not in e and "status_code" not in e
    assert e["dst_endpoint"]["location"] == {"country": "CN"}
    assert e["unmapped"]["bytes_sent"] == 0


def test_ocsf_pending_is_unknown(events: dict[str, dict[str, Any]]) -> None:
    e = events["pending"]
    assert (e["status_id"], e["status"]) == (0, "Unknown")
    assert (e["severity_id"], e["severity"]) == (3, "Medium")
    assert e["disposition_id"] == 1  # the policy let it through; what happened is unknown
    assert "end_time" not in e and "duration" not in e
    assert (e["activity_id"], e["type_uid"]) == (2, 600302)
    assert e["actor"]["app_name"] == "veilpix sdk"  # no app name: the door acted
    assert "location" not in e["dst_endpoint"]
    assert e["unmapped"]["outcome"] == "unknown"


def test_ocsf_failed_and_http_errors(events: dict[str, dict[str, Any]]) -> None:
    failed = events["failed"]
    assert (failed["status_id"], failed["severity_id"], failed["disposition_id"]) == (2, 2, 1)
    assert failed["status_detail"] == "ConnectTimeout: the vendor did not answer"
    assert (failed["activity_id"], failed["activity_name"]) == (4, "Delete")
    error = events["error"]  # sent, but the vendor answered 500: the API call failed
    assert (error["status_id"], error["status_code"], error["severity_id"]) == (2, "500", 1)
    assert (error["activity_id"], error["type_uid"]) == (3, 600303)
    other = events["other"]
    assert (other["activity_id"], other["activity_name"]) == (99, "OPTIONS")
    assert (other["type_uid"], other["type_name"]) == (600399, "API Activity: Other")
    assert other["src_endpoint"]["ip"] == "2001:db8::1"
    assert other["src_endpoint"]["port"] == 443


@pytest.mark.parametrize(
    ("method", "activity"),
    [
        ("POST", 1),
        ("GET", 2),
        ("HEAD", 2),
        ("PUT", 3),
        ("PATCH", 3),
        ("DELETE", 4),
        ("OPTIONS", 99),
        ("", 0),
    ],
)
def test_ocsf_activity_from_method(method: str, activity: int) -> None:
    rec = TransferRecord(
        id="r1",
        seq=7,
        begun="2025-06-01T12:00:00.000000Z",
        begin={"where": {"vendor": "v", "method": method}},
    )
    event = ocsf_event(rec, product_version="1")
    assert event["activity_id"] == activity
    assert event["type_uid"] == 600300 + activity
    assert event["time"] == 1748779200000
    assert event["metadata"]["sequence"] == 7
    assert event["src_endpoint"] == {"svc_name": "veilpix sdk"}
    assert event["dst_endpoint"] == {"svc_name": "v"}


@pytest.mark.parametrize(
    ("client", "endpoint"),
    [
        ("10.0.0.7", {"ip": "10.0.0.7"}),
        ("10.0.0.7:80", {"ip": "10.0.0.7", "port": 80}),
        ("::1", {"ip": "::1"}),
        ("[::1]:8080", {"ip": "::1", "port": 8080}),
        ("worker-3.internal", {"name": "worker-3.internal"}),
        ("unix:/run/veilpix.sock", {"name": "unix:/run/veilpix.sock"}),
    ],
)
def test_ocsf_client_address(client: str, endpoint: dict[str, Any]) -> None:
    rec = TransferRecord(
        id="r1",
        seq=1,
        begun="2025-06-01T12:00:00.000000Z",
        begin={"who": {"client": client, "door": "gateway"}},
    )
    src = ocsf_event(rec, product_version="1")["src_endpoint"]
    assert src == {"svc_name": "veilpix gateway", **endpoint}


def test_flat_row_matches_columns(records: dict[str, TransferRecord]) -> None:
    for rec in records.values():
        assert tuple(flat_row(rec)) == CSV_COLUMNS


def test_export_to_a_file(tmp_path: Path, records: dict[str, TransferRecord]) -> None:
    out_path = tmp_path / "transfers.csv"
    with open(out_path, "w", encoding="utf-8", newline="") as out:
        n = export(records.values(), "csv", out, product_version="1")
    with open(out_path, encoding="utf-8", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == n == len(records)
