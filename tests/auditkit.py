"""Builders for transfer-log tests: a real log in a temporary folder, filled with transfers
that carry real sanitized images (from the factories), credentials and prompts that must never
reach the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import factories
import veilpix
from veilpix import AuditLog, OutboundImage, Transfer

API_KEY = "sk-proj-Zq8dL2mX9vB4nT7wR1yK5hJ3"
GOOGLE_KEY = "AIzaSyD3x4mpl3K3yV4lu3F0rT3st1ngOnly00"
PROMPT = "put the CEO of ACME in a spacesuit on Mars"
PHOTO = factories.jpeg()
CLEAN = veilpix.sanitize(PHOTO)


def transfer(i: int = 0, **overrides: Any) -> Transfer:
    """A realistic transfer: an image edit to OpenAI with a key in the header and the URL."""
    fields: dict[str, Any] = {
        "vendor": "openai" if i % 3 else "gemini",
        "url": f"https://api.openai.com/v1/images/edits?key={GOOGLE_KEY}&n={i}",
        "method": "POST",
        "model": "gpt-image-1",
        "operation": "images.edit",
        "legal_entity": "OpenAI, L.L.C.",
        "region": "us",
        "country": "US" if i % 3 else "NL",
        "transfer_mechanism": "EU-US Data Privacy Framework",
        "app": "shop",
        "actor": f"user-{i % 4}",
        "purpose": "product photo editing",
        "legal_basis": "Art. 6(1)(b) contract",
        "images": [OutboundImage(PHOTO, CLEAN, "image[]")],
        "prompt": PROMPT,
        "headers": {"Authorization": f"Bearer {API_KEY}", "Content-Type": "multipart/form-data"},
        "controls_applied": ["content-usage-header"],
        "controls_account_level": ["zero-data-retention"],
    }
    fields.update(overrides)
    return Transfer(**fields)


def fill(log: AuditLog, n: int, **overrides: Any) -> list[str]:
    """``n`` sent transfers; returns their ids."""
    ids = []
    for i in range(n):
        pending = log.begin(transfer(i, **overrides))
        pending.finish(status=200, response_bytes=1000 + i, request_bytes=2000 + i)
        ids.append(pending.id)
    return ids


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection, the way someone tampering with the file would use it."""
    return sqlite3.connect(path, isolation_level=None)


def file_bytes(path: Path) -> bytes:
    """The log file and its WAL and shared-memory files, concatenated."""
    out = b""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            out += p.read_bytes()
    return out
