"""Who may use the console: one-time login links, sessions, CSRF tokens and passwords.

- **Login links.** ``veilpix audit serve`` prints a URL holding a one-time token (32 random
  bytes). Opening it once starts a session and the token is spent; an unused one expires
  after :data:`LINK_TTL`. Only a SHA-256 of a token is kept, so a memory dump of the server
  does not hold a working link either. Tokens never reach a log: the server's access lines
  leave query strings out and the login page redirects to a URL without it.
- **Sessions.** A session id (32 random bytes) in an ``HttpOnly``, ``SameSite=Strict``
  cookie (``Secure`` behind TLS), ending after :data:`IDLE` without use or :data:`MAX_AGE`
  in all. Each session has its own CSRF token, which every form that changes something must
  send back (:meth:`Session.check_csrf`), and a confirmation key that binds a confirmed
  action to exactly what the confirmation page showed.
- **Passwords** (remote access, ``[console.users]``): scrypt hashes made by
  ``veilpix audit serve --hash-password`` (:mod:`veilpix._passwords`, which the config
  checks them with too); failed logins slow down per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

__all__ = [
    "IDLE",
    "LINK_TTL",
    "MAX_AGE",
    "Session",
    "Sessions",
]

LINK_TTL = 15 * 60  # seconds an unused login link stays valid
IDLE = 2 * 3600  # a session ends after this long without a request ...
MAX_AGE = 12 * 3600  # ... and after this long in all
_FAILS_FREE = 5  # failed logins from one address before each further try waits
_MAX_SESSIONS = 1000


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass
class Session:
    """A signed-in viewer. ``user`` is who they are (a configured user name, or the local
    account that started the console when they came through its login link)."""

    id: str
    user: str
    via: str  # "link" or "password"
    client: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    confirm_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    spent: set[str] = field(default_factory=set)  # confirmation codes used
    _seal_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check_csrf(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())

    def seal(self, *parts: str) -> str:
        """A confirmation code for exactly ``parts`` (an action and its arguments): the
        confirmation page carries it, and the confirmed request must match it."""
        text = "\0".join(parts).encode("utf-8", "surrogatepass")
        return hmac.new(self.confirm_key, text, hashlib.sha256).hexdigest()

    def check_seal(self, code: str | None, *parts: str) -> bool:
        return code is not None and hmac.compare_digest(code.encode(), self.seal(*parts).encode())

    def spend_seal(self, code: str | None, *parts: str) -> bool:
        """:meth:`check_seal`, once: a confirmation acts one time (a second submit of the
        same page, or three at once, asks again)."""
        with self._seal_lock:
            if code is None or code in self.spent or not self.check_seal(code, *parts):
                return False
            self.spent.add(code)
            return True


class Sessions:
    """Login links and sessions of one console (in memory: a restart signs everyone out)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: dict[bytes, float] = {}  # SHA-256 of a token -> expiry
        self._sessions: dict[bytes, Session] = {}  # SHA-256 of a session id -> session
        self._fails: dict[str, tuple[int, float]] = {}  # client -> (failures, last)
        self._now = time.monotonic  # (tests move the clock)

    def new_link(self) -> str:
        """A one-time login token (valid for :data:`LINK_TTL` seconds, for one use)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._now()
            self._links = {d: t for d, t in self._links.items() if t > now}
            self._links[_digest(token)] = now + LINK_TTL
        return token

    def redeem(self, token: str, *, user: str, client: str) -> Session | None:
        """The session a login token starts (None: unknown, spent or expired)."""
        with self._lock:
            expiry = self._links.pop(_digest(token), None)
            if expiry is None or expiry < self._now():
                return None
        return self.start(user, via="link", client=client)

    def start(self, user: str, *, via: str, client: str) -> Session:
        session = Session(secrets.token_urlsafe(32), user, via, client)
        with self._lock:
            self._expire()
            if len(self._sessions) >= _MAX_SESSIONS:  # drop the longest idle one
                oldest = min(self._sessions, key=lambda k: self._sessions[k].seen)
                del self._sessions[oldest]
            self._sessions[_digest(session.id)] = session
        return session

    def get(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session ``session_id`` names (``touch``: and count this as its use)."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(_digest(session_id))
            if session is None:
                return None
            now = self._now()
            if now - session.seen > IDLE or now - session.created > MAX_AGE:
                del self._sessions[_digest(session_id)]
                return None
            if touch:
                session.seen = now
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(_digest(session_id), None)

    def _expire(self) -> None:
        now = self._now()
        self._sessions = {
            k: s
            for k, s in self._sessions.items()
            if now - s.seen <= IDLE and now - s.created <= MAX_AGE
        }

    # -- failed logins ---------------------------------------------------------------------------

    def wait_before_login(self, client: str) -> float:
        """Seconds ``client`` must still wait before its next login try (0: none)."""
        with self._lock:
            fails, last = self._fails.get(client, (0, 0.0))
            if fails < _FAILS_FREE:
                return 0.0
            delay = min(2.0 ** (fails - _FAILS_FREE), 300.0)
            return max(0.0, last + delay - self._now())

    def failed(self, client: str) -> None:
        with self._lock:
            fails, _ = self._fails.pop(client, (0, 0.0))
            while len(self._fails) >= 10_000:  # forget the longest quiet address, not all
                del self._fails[next(iter(self._fails))]
            self._fails[client] = (fails + 1, self._now())  # (re-inserted: newest last)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._fails.pop(client, None)
