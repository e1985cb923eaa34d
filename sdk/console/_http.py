"""The console's HTTP: :class:`Request` and :class:`Response` values, and the server that
carries them (Python's threading HTTP server: the console needs no extra package).

The application (:class:`veilpix.console._app.Console`) is a function from a request to a
response, so every page and action is tested without a socket; the server adds what a
socket needs:

- caps on open connections, in all and per client address (more get a quick 503 or are
  closed), and deadlines a reaper thread enforces: :data:`HEAD_DEADLINE` from the start of
  a request (or of the wait for the next one on a kept-alive connection) to its last header
  line, :data:`BODY_DEADLINE` for its body, :data:`READ_TIMEOUT` for any single read or
  write. A client that trickles bytes cannot hold a connection;
- body limits decided from the request head before a byte of the body is read (the app's
  ``body_limit``: a small form, or a photo from a signed-in viewer), a ``Content-Length``
  made of digits on every body (no chunked uploads), large bodies read a few at a time, into
  memory only: nothing goes to disk;
- TLS when given a certificate, wrapped and shaken hands in the connection's own thread;
- access lines without the query string (a login link holds a token), for whoever shows
  them (``veilpix audit serve --access-log``: stderr, control characters escaped).
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from veilpix._errors import VeilpixError
from veilpix._net import is_loopback
from veilpix.codec._multipart import parse_multipart

__all__ = [
    "FORM_BODY",
    "MAX_BODY",
    "Request",
    "Response",
    "Server",
]

MAX_BODY = 64 << 20  # the largest request body (a photo for the lookup)
FORM_BODY = 64 << 10  # the largest body of anything else (a form)
MAX_CONNECTIONS = 64
MAX_PER_CLIENT = 16  # open connections from one address
LARGE_BODIES = 4  # large bodies read at once
READ_TIMEOUT = 20.0  # seconds any one read or write may wait
HEAD_DEADLINE = 10.0  # seconds from the start of a request (or the wait for it) to its head
BODY_DEADLINE = 120.0  # seconds a whole body may take
ANSWER_DEADLINE = 30.0  # seconds a client may take to read an answer (a download: a chunk)
LINGER = 2.0  # seconds a refused body is drained for, so the refusal can be read


@dataclass
class Request:
    """One request as the console sees it. ``headers`` have lower-case names; ``query`` and
    :meth:`form` give the first value of each name."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str = "127.0.0.1"
    tls: bool = False
    _form: tuple[dict[str, str], dict[str, tuple[str, bytes]]] | None = field(
        default=None, repr=False, compare=False
    )

    @classmethod
    def of(
        cls,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        client: str = "127.0.0.1",
        tls: bool = False,
    ) -> Request:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        named: dict[str, str] = {}
        for k, v in headers:
            key = k.lower()
            if key == "x-forwarded-for" and key in named:  # (a proxy may add its own line)
                named[key] += f", {v}"
            else:
                named.setdefault(key, v)
        return cls(method.upper(), parts.path or "/", query, named, body, client, tls)

    @property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        with contextlib.suppress(CookieError):
            jar.load(self.headers.get("cookie", ""))
        return {k: m.value for k, m in jar.items()}

    def form(self) -> dict[str, str]:
        """The text fields of a form body (URL-encoded or multipart; {} for other bodies or
        ones that do not parse). Files are in :meth:`files`."""
        return self._parsed()[0]

    def files(self) -> dict[str, tuple[str, bytes]]:
        """The files of a multipart form: field name -> (file name, bytes)."""
        return self._parsed()[1]

    def _parsed(self) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
        if self._form is not None:
            return self._form
        fields: dict[str, str] = {}
        files: dict[str, tuple[str, bytes]] = {}
        kind = self.headers.get("content-type", "")
        media = kind.split(";")[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            try:
                text = self.body.decode("utf-8")
                parsed = parse_qs(text, keep_blank_values=True, max_num_fields=100)
            except (UnicodeDecodeError, ValueError):
                parsed = {}
            fields = {k: v[0] for k, v in parsed.items()}
        elif media == "multipart/form-data":
            try:
                form = parse_multipart(self.body, kind, max_parts=20, max_bytes=MAX_BODY)
            except (VeilpixError, ValueError):  # (UnicodeError is a ValueError)
                form = None
            for part in form.parts if form is not None else ():
                if part.is_file:
                    files.setdefault(part.name, (part.filename or "", part.data))
                else:
                    fields.setdefault(part.name, part.data.decode("utf-8", "replace"))
        self._form = (fields, files)
        return self._form


@dataclass
class Response:
    """A response: a whole ``body``, or ``stream`` (sent chunked, for large downloads)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Iterator[bytes] | None = None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(status, b"", "text/plain; charset=utf-8", [("Location", location)])


App = Callable[[Request], Response]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # (head and body go out as two writes)
    server_version = "veilpix-console"  # (not the Python version)
    server: Server
    timeout = READ_TIMEOUT

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        raw = self.request
        self.server.watch(raw, HEAD_DEADLINE)
        if self.server.context is not None:  # the handshake, here, not in the accept loop
            raw.settimeout(READ_TIMEOUT)
            try:
                self.request = self.server.context.wrap_socket(raw, server_side=True)
            finally:
                self.server.unwatch(raw)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.unwatch(self.request)
            if isinstance(self.request, ssl.SSLSocket):  # (the server closes the raw one)
                with contextlib.suppress(OSError):
                    self.request.close()

    def handle_one_request(self) -> None:
        self.server.watch(self.request, HEAD_DEADLINE, idle=True)  # the wait, and the head
        try:
            super().handle_one_request()
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError, ValueError, AttributeError):
            # (AttributeError: an SSL socket the reaper shut down under the read)
            self.close_connection = True

    def _length(self) -> int | None:
        """The body's length: None (answered) when it is refused."""
        if self.headers.get("Transfer-Encoding"):
            self._plain(411, "send the body with a Content-Length")
            return None
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        text = values[0].strip()
        if len(values) > 1 or not (text.isascii() and text.isdigit()) or len(text) > 12:
            self._plain(400, "bad Content-Length")
            return None
        return int(text)

    def _serve(self) -> None:
        self.server.watch(self.request, HEAD_DEADLINE)  # (a head came: no longer idle)
        length = self._length()
        if length is None:
            return
        request = Request.of(
            self.command,
            self.path,
            self.headers.items(),
            b"",
            client=self.client_address[0],
            tls=self.server.context is not None,
        )
        if length:
            limit = self.server.body_limit(request)
            if length > limit:
                self._plain(
                    413, f"the body is over {limit >> 10} KiB; sign in again if it is a photo"
                )
                self._linger()
                return
            body = self._read(length)
            if body is None:
                self.close_connection = True
                return
            request.body = body
        self.server.watch(self.request, None)  # the app at work: no deadline
        response = self.server.app(request)
        # a whole answer must be taken within its deadline (a reader that takes 8 kB a few
        # seconds holds no connection for long); a download, each chunk within it
        self.server.watch(self.request, ANSWER_DEADLINE)
        self._send(response)
        self.server.log_access(self.command, request.path, response.status)

    def _read(self, length: int) -> bytes | None:
        """The body, into one buffer (large ones a few at a time), within its deadline."""
        gate = self.server.large if length > FORM_BODY else None
        if gate is not None and not gate.acquire(timeout=READ_TIMEOUT):
            return None
        try:
            self.server.watch(self.request, BODY_DEADLINE)
            buf = bytearray(length)
            view, got = memoryview(buf), 0
            while got < length:
                n = self.rfile.readinto(view[got:])
                if not n:
                    return None
                got += n
            return bytes(buf)
        finally:
            if gate is not None:
                gate.release()

    do_GET = do_POST = do_HEAD = _serve

    def _linger(self) -> None:
        """After refusing an unread body: stop writing and drain what the client still sends
        for a moment (nowhere, a bounded time), so it reads the refusal instead of a reset."""
        with contextlib.suppress(OSError, ValueError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            stop = time.monotonic() + LINGER
            while time.monotonic() < stop and self.connection.recv(1 << 16):
                pass

    def _plain(self, status: int, text: str) -> None:
        self._send(Response(status, text.encode(), "text/plain; charset=utf-8"))
        self.close_connection = True

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        head_only = self.command == "HEAD"
        if response.stream is None:
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if not head_only:
                self.wfile.write(response.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head_only:
            return
        for chunk in response.stream:
            if chunk:
                self.server.watch(self.request, ANSWER_DEADLINE)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own lines (errors) hold the request line and so a login token: they
        are replaced by :meth:`Server.log_access`, which leaves the query out."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    """The console on a socket: ``app`` answers each request, ``body_limit`` (from the
    request's head, before its body is read) says how large a body it may send."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        *,
        body_limit: Callable[[Request], int] = lambda _r: FORM_BODY,
        trusted_proxy: bool = False,
        tls: ssl.SSLContext | None = None,
        access_log: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        self.trusted_proxy = trusted_proxy  # a TLS proxy on loopback: not capped per address
        self.context = tls
        self._access_log = access_log
        self.large = threading.BoundedSemaphore(LARGE_BODIES)
        self._lock = threading.Lock()
        self._open = 0
        self._per_client: dict[str, int] = {}
        self._deadlines: dict[socket.socket, float] = {}
        self._idle: set[Any] = set()  # kept-alive connections waiting for their next request
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self._reaper = threading.Thread(target=self._reap, name="console-reaper", daemon=True)
        self._reaper.start()

    # -- deadlines ---------------------------------------------------------------------------

    def watch(self, sock: Any, seconds: float | None, *, idle: bool = False) -> None:
        """From now, ``sock`` has ``seconds`` (None: no deadline, only the read timeout);
        ``idle``: it waits for its next request (the first to go when the server is full)."""
        with self._lock:
            if seconds is None:
                self._deadlines.pop(sock, None)
            else:
                self._deadlines[sock] = time.monotonic() + seconds
            if idle:
                self._idle.add(sock)
            else:
                self._idle.discard(sock)

    def unwatch(self, sock: Any) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)
            self._idle.discard(sock)

    def _reap(self) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                late = [s for s, t in self._deadlines.items() if t < now]
                for s in late:
                    del self._deadlines[s]
            for s in late:
                with contextlib.suppress(OSError, AttributeError, ValueError):
                    s.shutdown(socket.SHUT_RDWR)

    # -- connections ---------------------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        client = str(client_address[0])
        with self._lock:
            capped = not (self.trusted_proxy and is_loopback(client))  # (its clients vary)
            over = capped and self._per_client.get(client, 0) >= MAX_PER_CLIENT
            room = self._open < MAX_CONNECTIONS
            if not over and not room and self._idle:
                # a connection only waiting for its next request makes room for a new one
                # (its browser opens another when it needs one)
                waiting = self._idle.pop()
                self._deadlines.pop(waiting, None)
                with contextlib.suppress(OSError, AttributeError, ValueError):
                    waiting.shutdown(socket.SHUT_RDWR)
                room = True  # (one over the cap for the moment its thread takes to end)
            full = over or not room
            if not full:
                self._open += 1
                self._per_client[client] = self._per_client.get(client, 0) + 1
        if full:
            if self.context is None:  # (a TLS client would not read a plain answer)
                with contextlib.suppress(OSError):
                    request.settimeout(0.5)
                    request.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\nRetry-After: 1\r\n\r\n"
                    )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(client)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(str(client_address[0]))

    def _release(self, client: str) -> None:
        with self._lock:
            self._open -= 1
            left = self._per_client.get(client, 1) - 1
            if left:
                self._per_client[client] = left
            else:
                self._per_client.pop(client, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
            return  # (a failed handshake, a client gone: a port scan must not flood the terminal)
        print(f"veilpix console: {type(exc).__name__}: {exc}", file=sys.stderr)

    def log_access(self, method: str, path: str, status: int) -> None:
        """Hand (method, path without its query, status) to ``access_log``, which shows it
        (the CLI writes a line, control characters escaped)."""
        if self._access_log is not None:
            self._access_log(method, path, status)

    @property
    def port(self) -> int:
        return int(self.server_address[1])
