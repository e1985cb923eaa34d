"""Key material of one transfer log: fingerprint key, wrap key, signing key.

One small JSON file beside the log (``audit.db`` -> ``audit.db.key``), mode 0600, created on
first use with ``O_EXCL`` (several processes opening a new log agree on one file). It holds:

- ``hmac``: the per-log secret behind every fingerprint. A plain SHA-256 of a photo lets
  anyone who has the photo confirm it was sent; a keyed HMAC needs this file as well. A second
  key derived from it MACs every log entry as it is written (:meth:`KeyFile.entry_mac`), so
  nobody without this file can write or rewrite an entry a writer or verify will accept
  (keyed BLAKE2b under a key derived from this one and the log's id).
- ``wrap``: AES-256-GCM key that wraps the per-subject keys stored in the log, so the log file
  alone reveals no subject-linked field.
- ``signing``: the Ed25519 key that signs checkpoints. Its public half is stored in the log
  and can be exported; ``veilpix audit verify`` needs nothing else.

The file also knows the log it belongs to and how far that log had got: ``state`` holds the
log's founding time and its newest checkpoint (id, entry, hash of the signature), written after
each checkpoint is on disk. A writer refuses a log that is missing, emptied or cut back behind
it; starting over is ``veilpix audit restart``, which moves the old file aside, records the
old log's id in ``previous`` and leaves a signed statement as the new log's first entry
(``restart`` holds it until that entry is written).

The log file can be handed to an auditor without this file: they can verify and read every
fact, but not decrypt subject-linked fields or recompute fingerprints.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from veilpix._atomic import write_file
from veilpix._errors import ConfigError, VeilpixError

__all__ = [
    "KeyFile",
    "SealError",
    "check_private",
    "key_id",
    "load_public_key",
    "open_sealed",
    "public_key_pem",
    "seal",
    "verify_signature",
]

_FORMAT = "veilpix-audit-key/1"
_NONCE = 12
_ENTRY_MAC = b"veilpix-audit-entry-mac/1"


class SealError(VeilpixError):
    """A sealed field did not open (wrong key or altered ciphertext)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def key_id(public_raw: bytes) -> str:
    """Short, stable name of a signing key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a random nonce; the nonce leads the output."""
    nonce = secrets.token_bytes(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise SealError("sealed field does not open with this key") from exc


def verify_signature(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_pem(public_raw: bytes) -> str:
    key = Ed25519PublicKey.from_public_bytes(public_raw)
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """Raw Ed25519 public key from a PEM file written by ``veilpix audit key``."""
    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the public key {os.fspath(path)!r}: {exc}",
            hint="export it with: veilpix audit key -o audit-public.pem",
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{os.fspath(path)!r} is not an Ed25519 public key")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class KeyFile:
    """The secrets of one log. Never logged, never exported by veilpix."""

    log_id: str
    hmac_key: bytes = field(repr=False)
    wrap_key: bytes = field(repr=False)
    signing_seed: bytes = field(repr=False)
    # how far the log got (see the module docstring); None until the log is founded
    state: dict[str, Any] | None = None
    previous: tuple[str, ...] = ()  # ids of logs these keys wrote before a restart
    restart: dict[str, Any] | None = None  # a restart statement not yet in the new log

    @classmethod
    def generate(cls, log_id: str) -> KeyFile:
        return cls(
            log_id=log_id,
            hmac_key=secrets.token_bytes(32),
            wrap_key=AESGCM.generate_key(bit_length=256),
            signing_seed=secrets.token_bytes(32),
        )

    @property
    def public_raw(self) -> bytes:
        key = Ed25519PrivateKey.from_private_bytes(self.signing_seed).public_key()
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.signing_seed).sign(message)

    def entry_mac(self, entry_hash: bytes, log_id: str) -> bytes:
        """The MAC stored with an entry of log ``log_id``: keyed BLAKE2b-256 (RFC 7693's MAC
        mode) over the entry's hash (which covers its content and, through the chain, every
        entry before it), under a key derived for that log, so that entries cannot move
        between logs that share keys (a restarted log keeps its keys). BLAKE2b rather than
        HMAC-SHA256: the same security, a third of the time, on every entry written."""
        key = _entry_key(self.hmac_key, log_id)
        return hashlib.blake2b(entry_hash, key=key, digest_size=32).digest()

    def knows(self, log_id: str) -> bool:
        """These keys belong to ``log_id``, or wrote it before a restart."""
        return log_id == self.log_id or log_id in self.previous

    def fingerprint(self, label: bytes, digest: bytes) -> str:
        """Keyed fingerprint of data whose SHA-256 is ``digest``: HMAC-SHA256 over the label
        and the digest, hex. Taking the digest (not the data) lets the log reuse the hashes
        the image pipeline already computed instead of reading a large image again."""
        return hmac.new(self.hmac_key, label + b"\0" + digest, hashlib.sha256).hexdigest()

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": _FORMAT,
            "log_id": self.log_id,
            "hmac": _b64(self.hmac_key),
            "wrap": _b64(self.wrap_key),
            "signing": _b64(self.signing_seed),
        }
        if self.state is not None:
            doc["state"] = self.state
        if self.previous:
            doc["previous"] = list(self.previous)
        if self.restart is not None:
            doc["restart"] = self.restart
        return json.dumps(doc, indent=1).encode()

    def evolve(self, **changes: Any) -> KeyFile:
        """A copy with ``changes`` (state, log_id, previous, restart); the secrets stay."""
        return replace(self, **changes)

    def save(self, path: Path) -> None:
        """Replace ``path`` with these keys, atomically (a temporary 0600 file in the same
        folder, fsynced, renamed over it, the folder fsynced): a crash leaves the old file or
        the new one, never half of either. A symlinked key file is replaced where it points."""
        write_file(Path(os.path.realpath(path)), self.to_json())

    @classmethod
    def read(cls, path: Path) -> KeyFile:
        """The keys in ``path``; ConfigError when the file is damaged or other users may
        read or write it (its keys would be everyone's: the file is not used, not fixed)."""
        check_private(path, "log key file")
        try:
            doc = json.loads(path.read_bytes())
            if doc.get("format") != _FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            state, restart = doc.get("state"), doc.get("restart")
            previous = doc.get("previous", [])
            if not all(isinstance(x, (dict, type(None))) for x in (state, restart)):
                raise ValueError("state and restart must be objects")
            if not isinstance(previous, list) or not all(isinstance(p, str) for p in previous):
                raise ValueError("previous must be a list of log ids")
            if state is not None:
                _check_state(state)
            out = cls(
                log_id=str(doc["log_id"]),
                hmac_key=_unb64(doc["hmac"]),
                wrap_key=_unb64(doc["wrap"]),
                signing_seed=_unb64(doc["signing"]),
                state=state,
                previous=tuple(previous),
                restart=restart,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"the log key file {str(path)!r} is damaged: {exc}",
                hint="restore it from a backup; without it the log can be read and verified "
                "but not written",
            ) from exc
        if not (len(out.hmac_key) == len(out.wrap_key) == len(out.signing_seed) == 32):
            raise ConfigError(f"the log key file {str(path)!r} holds keys of the wrong size")
        return out

    @classmethod
    def create_or_read(cls, path: Path, log_id: str) -> KeyFile:
        """Create ``path`` (0600) holding new keys for ``log_id``; if another process won the
        race, read theirs. Written to a temporary name and linked into place, so nobody ever
        reads a half-written key file."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = cls.generate(log_id)
        try:
            write_file(path, keys.to_json(), replace=False)
        except FileExistsError:
            return cls.read(path)
        return keys


def _check_state(state: dict[str, Any]) -> None:
    """The recorded state has the shapes veilpix writes (ValueError otherwise)."""
    whole = {"checkpoint": True, "seq": False}
    for name, required in whole.items():
        value = state.get(name)
        if (value is None and not required) or (type(value) is int and value >= 0):
            continue
        raise ValueError(f"state.{name} must be a whole number, not {value!r:.40}")
    for name in ("log_id", "founded", "signature", "ts"):
        if not isinstance(state.get(name, ""), str):
            raise ValueError(f"state.{name} must be text")


@lru_cache(maxsize=8)
def _entry_key(hmac_key: bytes, log_id: str) -> bytes:
    return hmac.digest(hmac_key, _ENTRY_MAC + b"\0" + log_id.encode(), "sha256")


def check_private(path: Path, what: str) -> None:
    """Raise ConfigError when users other than the owner may read or write ``path`` (POSIX
    modes; Windows has none to check). veilpix does not change the mode itself: a file that
    others could read may already have been copied, which the owner should know."""
    if os.name == "nt":
        return
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise ConfigError(
            f"the {what} {str(path)!r} is open to other users (mode {mode:04o})",
            hint=f"run chmod 600 {str(path)!r}; rotate the keys if others may have read them",
        )
