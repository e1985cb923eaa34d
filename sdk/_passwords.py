"""Password hashes for the people who sign in to veilpix's own pages (the compliance
console's ``[console.users]``): scrypt, stored as ``scrypt$N$r$p$salt$hash``. Here, not in the
console, because ``veilpix.toml`` is checked with :func:`parse_hash` when it is loaded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from veilpix._errors import ConfigError

__all__ = ["check_password", "hash_password", "parse_hash"]

_SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) for ``[console.users]``."""
    if len(password) < 12:
        raise ConfigError(
            "a console password needs at least 12 characters",
            hint="a passphrase of several words is easy to type and hard to guess",
        )
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=128 << 20, **_SCRYPT)
    b64 = base64.b64encode
    return (
        f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}$"
        f"{b64(salt).decode()}${b64(digest).decode()}"
    )


def parse_hash(text: str, where: str) -> tuple[int, int, int, bytes, bytes]:
    """The parts of a stored hash; ConfigError naming ``where`` when it is not one."""
    parts = text.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError(text)
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5])
        if not (1 < n <= 1 << 20 and n & (n - 1) == 0 and 0 < r <= 32 and 0 < p <= 16):
            raise ValueError(text)
        if len(salt) < 8 or len(digest) != 64:
            raise ValueError(text)
    except ValueError:
        raise ConfigError(
            f"{where} is not a password hash made by veilpix",
            hint="make one with: veilpix audit serve --hash-password",
        ) from None
    return n, r, p, salt, digest


def check_password(password: str, stored: str) -> bool:
    n, r, p, salt, digest = parse_hash(stored, "the stored hash")
    try:
        got = hashlib.scrypt(
            password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, maxmem=256 << 20
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, digest)
