"""Export transfer records for spreadsheets (CSV), scripts (JSON Lines) and SIEMs (OCSF).

Every format streams: one record is read, written and dropped before the next, so a log of
any size exports in constant memory. Nothing is exported that the log does not already hold,
and the log holds no credentials, prompts or image bytes (see :mod:`veilpix.audit._record`).

``csv``
    One row per transfer, the columns of :data:`CSV_COLUMNS` (a header row first). Lists are
    joined with ``;``, booleans are ``true``/``false``, a missing value is an empty cell. Any
    text cell that a spreadsheet could read as a formula (it starts with ``=``, ``+``, ``-``,
    ``@``, a tab, CR or LF) gets a leading apostrophe, as OWASP advises against CSV injection:
    vendor error messages, app names and reasons can be chosen by someone else. Open the
    output file with ``newline=""`` (the csv module writes ``\\r\\n`` row ends itself).
    ``faces_found``, ``faces_blurred`` and ``faces_unblurred`` count the images that were
    checked for faces and are empty when none was (unknown: such an image may hold faces);
    ``images_faces_unchecked`` and ``bytes_sent`` count what left, so 0 for a blocked call.

``jsonl``
    One :meth:`TransferRecord.to_dict` per line, compact, keys sorted, UTF-8 (not ASCII-escaped).

``ocsf``
    One event per line of the OCSF class **API Activity** (``class_uid`` 6003, category 6
    Application Activity), schema version :data:`OCSF_VERSION`:
    https://schema.ocsf.io/1.6.0/classes/api_activity. 1.6.0 is the first version in which
    the class carries both ``http_response`` and the ``security_control`` profile (action,
    disposition, policy) that a policy-enforcing gateway needs; 1.7.0 changed the meaning of
    ``metadata.uid``. The mapping:

    ======================== ==================================================================
    OCSF attribute           from the transfer record
    ======================== ==================================================================
    activity_id / _name      HTTP method: POST 1 Create, GET/HEAD 2 Read, PUT/PATCH 3 Update,
                             DELETE 4 Delete, anything else 99 Other (``activity_name`` is then
                             the method), no method 0 Unknown
    category_uid / class_uid 6 "Application Activity" / 6003 "API Activity"
    type_uid / type_name     ``600300 + activity_id`` / "API Activity: <activity>"
    time, start_time         the begin (epoch milliseconds, UTC; ``timezone_offset`` 0)
    end_time, duration       the finish, and finish minus begin in ms (only when finished)
    status_id / status       1 Success: sent and the HTTP status (if any) below 400;
                             2 Failure: blocked, failed, or sent with HTTP 400 and above;
                             0 Unknown: begun, never finished
    status_code              the HTTP status as text; ``status_detail``: the recorded reason
    severity_id / severity   1 Informational: sent. 2 Low: blocked (a control stopped the call
                             before any byte left: no transfer, but an attempt worth a look) or
                             failed (the call broke off; the data may or may not have arrived).
                             3 Medium: outcome unknown (the request may have left and nothing
                             says what happened: the register cannot tell whether personal data
                             was transferred, so someone has to find out)
    action_id / disposition  security_control profile: blocked is 2 Denied / 2 Blocked; every
    _id, policy.name         other outcome passed the policy: 1 Allowed / 1 Allowed.
                             ``policy.name`` is the rule that decided
    message                  one line: method, host, vendor, outcome, HTTP status, images
    metadata                 product {name, vendor_name "veilpix", version}, version
                             :data:`OCSF_VERSION`, uid (record id), sequence (log sequence
                             number), log_name "veilpix transfer log", log_provider "veilpix",
                             original_time (the begin as stored), logged_time, profiles
                             ["security_control"]
    actor                    app_name: the app (else "veilpix <door>"); user.name: the actor
    api                      operation (the door's operation name, else "<METHOD> <path>"),
                             service.name: vendor, request.uid: record id, response.code: HTTP
                             status
    src_endpoint             the caller's address (ip/port, or name) for the proxy doors;
                             svc_name "veilpix <door>" always (the attribute is required)
    dst_endpoint             hostname, port, location.country (ISO 3166-1 alpha-2)
    http_request             http_method, user_agent, url {url_string, scheme, hostname, port,
                             path, query_string} (credentials were removed before storing)
    http_response            code, when the vendor answered
    observables              hostname (type 1), client IP (2), actor (4 User Name), URL (6)
    unmapped                 veilpix facts OCSF has no place for: outcome, door, legal entity,
                             region, transfer mechanism, purpose, legal basis, consent, subject
                             state, model, rule, retention, image, byte and face counts,
                             metadata and data categories, privacy controls, latency, request
                             and response sizes, the vendor's request id
    ======================== ==================================================================

    ``resources`` is left out: the images are the request's payload, not resources the call
    acted on at the vendor, and their facts are in ``unmapped``. Request headers are left out
    too (only ``User-Agent``): a SIEM does not need them and a header name the log did not
    recognise as secret could still carry one.
"""

from __future__ import annotations

import csv
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from veilpix._errors import ConfigError
from veilpix.audit._chain import canonical
from veilpix.audit._records import TransferRecord, summarize
from veilpix.metadata._facts import CATEGORIES

__all__ = [
    "CSV_COLUMNS",
    "EXPORT_FORMATS",
    "OCSF_SCHEMA_URL",
    "OCSF_VERSION",
    "export",
    "flat_row",
    "ocsf_event",
]

EXPORT_FORMATS = ("csv", "jsonl", "ocsf")
OCSF_VERSION = "1.6.0"
OCSF_SCHEMA_URL = "https://schema.ocsf.io/1.6.0/classes/api_activity"

CSV_COLUMNS = (
    "id",
    "begun",
    "finished",
    "outcome",
    "status",
    "reason",
    "rule",
    "app",
    "actor",
    "client",
    "door",
    "vendor",
    "legal_entity",
    "model",
    "operation",
    "method",
    "host",
    "url",
    "region",
    "country",
    "transfer_mechanism",
    "purpose",
    "legal_basis",
    "consent",
    "subject",
    "images",
    "bytes_before",
    "bytes_sent",
    "faces_found",
    "faces_blurred",
    "faces_unblurred",
    "images_faces_unchecked",
    "images_downscaled",
    "metadata_found",
    "data_categories",
    "controls_applied",
    "controls_account_level",
    "controls_unavailable",
    "latency_ms",
    "request_bytes",
    "response_bytes",
    "vendor_request_id",
    "retention",
)

# -- the flat view shared by CSV and OCSF ------------------------------------------------------


def _face_counts(images: Sequence[Mapping[str, Any]]) -> tuple[int | None, ...]:
    """(faces found, blurred, left unblurred), summed over the images that were checked for
    faces; all None when none was: an image never checked may hold faces, so "not counted"
    is not "zero" (its ``faces_blurred`` of 0 says nothing either)."""
    checked = [
        i
        for i in images
        if i.get("faces_checked") is not False and i.get("faces_found") is not None
    ]
    if not checked:
        return None, None, None
    found = sum(int(i["faces_found"]) for i in checked)
    blurred = sum(int(i.get("faces_blurred") or 0) for i in checked)
    unblurred = sum(
        int(i["faces_unblurred"])
        if i.get("faces_unblurred") is not None
        else max(int(i["faces_found"]) - int(i.get("faces_blurred") or 0), 0)
        for i in checked
    )
    return found, blurred, unblurred


def flat_row(rec: TransferRecord) -> dict[str, Any]:
    """One transfer as a flat dict keyed by :data:`CSV_COLUMNS`, values typed (int, bool, str,
    list of str or None). Image facts are totals over the call's images. The face counts cover
    the images checked for faces and are None when none was (unknown, not 0).
    ``bytes_sent`` and ``images_faces_unchecked`` are what ``summarize`` counts as sent: 0 for
    a blocked call, which sent nothing."""
    d = rec.to_dict()
    who, where, why, what, controls = d["who"], d["where"], d["why"], d["what"], d["controls"]
    images: list[dict[str, Any]] = what.get("images") or []
    found: set[str] = set()
    faces_found, faces_blurred, faces_unblurred = _face_counts(images)
    for img in images:
        found.update(img.get("metadata_found") or {})
    return {
        "id": d["id"],
        "begun": d["begun"],
        "finished": d["finished"],
        "outcome": d["outcome"],
        "status": d["status"],
        "reason": d["reason"],
        "rule": d["rule"],
        "app": who.get("app"),
        "actor": who.get("actor"),
        "client": who.get("client"),
        "door": who.get("door"),
        "vendor": where.get("vendor"),
        "legal_entity": where.get("legal_entity"),
        "model": where.get("model"),
        "operation": where.get("operation"),
        "method": where.get("method"),
        "host": where.get("host"),
        "url": where.get("url"),
        "region": where.get("region"),
        "country": where.get("country"),
        "transfer_mechanism": where.get("transfer_mechanism"),
        "purpose": why.get("purpose"),
        "legal_basis": why.get("legal_basis"),
        "consent": why.get("consent"),
        "subject": d["subject"],
        "images": len(images),
        "bytes_before": int(what.get("bytes_before") or 0),
        "bytes_sent": summarize([rec])[0].bytes_sent,
        "faces_found": faces_found,
        "faces_blurred": faces_blurred,
        "faces_unblurred": faces_unblurred,
        "images_faces_unchecked": 0 if rec.outcome == "blocked" else rec.faces_unchecked,
        "images_downscaled": sum(1 for i in images if i.get("downscaled")),
        "metadata_found": [c for c in CATEGORIES if c in found] + sorted(found - set(CATEGORIES)),
        "data_categories": list(what.get("categories") or []),
        "controls_applied": list(controls.get("applied") or []),
        "controls_account_level": list(controls.get("account_level") or []),
        "controls_unavailable": list(controls.get("unavailable") or []),
        "latency_ms": d["latency_ms"],
        "request_bytes": d["request_bytes"],
        "response_bytes": d["response_bytes"],
        "vendor_request_id": d["vendor_request_id"],
        "retention": d["retention"],
    }


# -- CSV ---------------------------------------------------------------------------------------

# What makes Excel, LibreOffice or Google Sheets evaluate a cell (OWASP "CSV Injection"), plus
# the full-width forms some locales accept.
_FORMULA_START = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")


def _neutralise(text: str) -> str:
    """``text`` with a leading apostrophe when a spreadsheet would read it as a formula."""
    if text[:1] in _FORMULA_START or text.lstrip()[:1] in _FORMULA_START:
        return "'" + text
    return text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        value = ";".join(str(v) for v in value)
    return _neutralise(str(value))


# -- OCSF --------------------------------------------------------------------------------------

_ACTIVITY_BY_METHOD = {"POST": 1, "GET": 2, "HEAD": 2, "PUT": 3, "PATCH": 3, "DELETE": 4}
_ACTIVITY_NAMES = {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium"}
_STATUS_NAMES = {0: "Unknown", 1: "Success", 2: "Failure"}
_SEVERITY_BY_OUTCOME = {"sent": 1, "blocked": 2, "failed": 2, "unknown": 3}
# Facts that have an OCSF home; everything else in flat_row goes to ``unmapped``.
_MAPPED = frozenset(
    {
        "id",
        "begun",
        "finished",
        "status",
        "reason",
        "app",
        "actor",
        "client",
        "vendor",
        "operation",
        "method",
        "host",
        "url",
        "country",
    }
)


def _epoch_ms(stamp: str) -> int:
    """A stored UTC time (``2025-01-02T03:04:05.678901Z``) as milliseconds since the epoch."""
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _address(client: str) -> dict[str, Any]:
    """A caller address (``10.0.0.7``, ``10.0.0.7:5123``, ``[::1]:5123``, a name) as the IP or
    name and port of an OCSF network endpoint."""
    host, port = client.strip(), None
    head, sep, tail = host.rpartition(":")
    if sep and tail.isdigit() and (head.startswith("[") or ":" not in head):
        host, port = head, int(tail)
    host = host.strip("[]")
    out: dict[str, Any] = {}
    try:
        out["ip"] = str(ipaddress.ip_address(host))
    except ValueError:
        out["name"] = host
    if port is not None and port <= 65535:
        out["port"] = port
    return out


def _url_object(url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"url_string": url}
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return out
    fields = {
        "scheme": parts.scheme,
        "hostname": parts.hostname,
        "path": parts.path,
        "query_string": parts.query,
    }
    out.update({key: value for key, value in fields.items() if value})
    if port is not None:
        out["port"] = port
    return out


def ocsf_event(rec: TransferRecord, *, product_version: str) -> dict[str, Any]:
    """One transfer as an OCSF 1.6.0 API Activity event (the mapping is in the module doc)."""
    row = flat_row(rec)
    outcome: str = row["outcome"]
    method = str(row["method"] or "").upper()
    activity_id = _ACTIVITY_BY_METHOD.get(method, 99 if method else 0)
    activity = method if activity_id == 99 else _ACTIVITY_NAMES[activity_id]
    http_status: int | None = row["status"]
    if outcome == "unknown":
        status_id = 0
    elif outcome == "sent" and (http_status is None or http_status < 400):
        status_id = 1
    else:
        status_id = 2
    severity_id = _SEVERITY_BY_OUTCOME.get(outcome, 3)
    blocked = outcome == "blocked"
    start = _epoch_ms(rec.begun)
    door = row["door"] or "sdk"
    vendor = str(row["vendor"] or "unknown")
    host: str = row["host"] or ""
    url: str = row["url"] or ""
    url_obj = _url_object(url) if url else {}
    images = row["images"]

    message = f"{method or '?'} {host or vendor} ({vendor}): {outcome}"
    if http_status is not None:
        message += f", HTTP {http_status}"
    if images:
        message += f", {images} image{'s' if images != 1 else ''}"

    headers = rec.begin.get("headers") or {}
    user_agent = headers.get("user-agent")
    actor: dict[str, Any] = {"app_name": row["app"] or f"veilpix {door}"}
    if row["actor"]:
        actor["user"] = {"name": row["actor"]}
    src: dict[str, Any] = {"svc_name": f"veilpix {door}"}
    if row["client"]:
        src.update(_address(str(row["client"])))
    dst: dict[str, Any] = {"hostname": host} if host else {"svc_name": vendor}
    if "port" in url_obj:
        dst["port"] = url_obj["port"]
    if row["country"]:
        dst["location"] = {"country": row["country"]}
    request: dict[str, Any] = {"http_method": method} if method else {}
    if url_obj:
        request["url"] = url_obj
    if user_agent:
        request["user_agent"] = user_agent
    path = url_obj.get("path") or "/"
    api: dict[str, Any] = {
        "operation": row["operation"] or f"{method or 'REQUEST'} {path}",
        "service": {"name": vendor},
        "request": {"uid": rec.id},
    }
    if http_status is not None:
        api["response"] = {"code": http_status}

    event: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": activity,
        "category_uid": 6,
        "category_name": "Application Activity",
        "class_uid": 6003,
        "class_name": "API Activity",
        "type_uid": 600300 + activity_id,
        "type_name": f"API Activity: {_ACTIVITY_NAMES[activity_id]}",
        "severity_id": severity_id,
        "severity": _SEVERITY_NAMES[severity_id],
        "status_id": status_id,
        "status": _STATUS_NAMES[status_id],
        "action_id": 2 if blocked else 1,
        "action": "Denied" if blocked else "Allowed",
        "disposition_id": 2 if blocked else 1,
        "disposition": "Blocked" if blocked else "Allowed",
        "time": start,
        "start_time": start,
        "timezone_offset": 0,
        "message": message,
        "metadata": {
            "product": {"name": "veilpix", "vendor_name": "veilpix", "version": product_version},
            "version": OCSF_VERSION,
            "uid": rec.id,
            "sequence": rec.seq,
            "log_name": "veilpix transfer log",
            "log_provider": "veilpix",
            "original_time": rec.begun,
            "logged_time": start,
            "profiles": ["security_control"],
        },
        "actor": actor,
        "api": api,
        "src_endpoint": src,
        "dst_endpoint": dst,
        "http_request": request,
    }
    if rec.finished:
        end = _epoch_ms(rec.finished)
        event["end_time"] = end
        event["duration"] = max(end - start, 0)
    if http_status is not None:
        event["status_code"] = str(http_status)
        event["http_response"] = {"code": http_status}
    if row["reason"]:
        event["status_detail"] = row["reason"]
    if row["rule"]:
        event["policy"] = {"name": row["rule"]}
    observables = [
        {"name": name, "type_id": type_id, "type": kind, "value": value}
        for name, type_id, kind, value in (
            ("dst_endpoint.hostname", 1, "Hostname", host),
            ("src_endpoint.ip", 2, "IP Address", src.get("ip")),
            ("actor.user.name", 4, "User Name", row["actor"]),
            ("http_request.url.url_string", 6, "URL String", url),
        )
        if value
    ]
    if observables:
        event["observables"] = observables
    event["unmapped"] = {
        key: value
        for key, value in row.items()
        if key not in _MAPPED and value is not None and value != []
    }
    return event


# -- the entry point ---------------------------------------------------------------------------


def export(
    records: Iterable[TransferRecord], fmt: str, out: TextIO, *, product_version: str
) -> int:
    """Write ``records`` to ``out`` as ``fmt`` (one of :data:`EXPORT_FORMATS`), one at a time;
    return how many were written. ``product_version`` is the veilpix version OCSF events name."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(
            f"unknown export format {fmt!r}", hint=f"use one of: {', '.join(EXPORT_FORMATS)}"
        )
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for rec in records:
            row = flat_row(rec)
            writer.writerow([_cell(row[column]) for column in CSV_COLUMNS])
            count += 1
        return count
    for rec in records:
        doc = rec.to_dict() if fmt == "jsonl" else ocsf_event(rec, product_version=product_version)
        out.write(canonical(doc) + "\n")
        count += 1
    return count
