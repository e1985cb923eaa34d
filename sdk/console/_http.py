"""The console's HTTP: :class:`Request` and :class:`Response` values, and the server that
carries them (Python's threading HTTP server: the console needs no extra package).

The application (:class:`veilpix.console._app.Console`) is a function from a request to a
response, so every page and action is tested without a socket; the server adds what a
socket needs:

- a cap on open connections (more get a quick 503), a read timeout per connection and a
  deadline for a whole request body, so slow or stalled clients cannot hold it;
- a body size cap (:data:`MAX_BODY`, the largest photo the lookup takes), a
  ``Content-Length`` on every body it reads (no chunked uploads) and nothing on disk: a
  body lives in memory until the response is sent;
- TLS when given a certificate (the handshake runs in the connection's thread);
- access lines on stderr that leave the query string out (a login link holds a token).
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
from veilpix.codec._multipart import parse_multipart

__all__ = [
    "MAX_BODY",
    "Request",
    "Response",
    "Server",
]

MAX_BODY = 64 << 20  # the largest request body (a photo for the lookup)
MAX_CONNECTIONS = 64
READ_TIMEOUT = 20.0  # seconds a connection may stay silent
BODY_DEADLINE = 120.0  # seconds a whole body may take


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
            named.setdefault(k.lower(), v)
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
            except VeilpixError:
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

    def version_string(self) -> str:
        return self.server_version

    server: Server
    timeout = READ_TIMEOUT

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(READ_TIMEOUT)
            self.connection.do_handshake()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    def _serve(self) -> None:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self._plain(411, "send the body with a Content-Length")
            return
        try:
            length = int(length_text) if length_text is not None else 0
        except ValueError:
            length = -1
        if length < 0:
            self._plain(400, "bad Content-Length")
            return
        if length > MAX_BODY:
            self._plain(413, f"the body is over {MAX_BODY >> 20} MiB")
            return
        body = self._read(length)
        if body is None:
            self.close_connection = True
            return
        request = Request.of(
            self.command,
            self.path,
            self.headers.items(),
            body,
            client=self.client_address[0],
            tls=self.server.tls,
        )
        try:
            response = self.server.app(request)
        except Exception as exc:  # noqa: BLE001 - the console must answer, not die
            print(f"veilpix console: {type(exc).__name__}: {exc}", file=sys.stderr)
            response = Response(500, b"internal error", "text/plain; charset=utf-8")
        self._send(response)
        self.server.log_access(self.command, request.path, response.status)

    def _read(self, length: int) -> bytes | None:
        chunks, left, deadline = [], length, time.monotonic() + BODY_DEADLINE
        while left:
            if time.monotonic() > deadline:
                return None
            chunk = self.rfile.read1(min(left, 1 << 16))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    do_GET = do_POST = do_HEAD = _serve

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
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own lines (errors) hold the request line and so a login token: they
        are replaced by :meth:`Server.log_access`, which leaves the query out."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    """The console on a socket: ``app`` answers each request."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        *,
        tls: ssl.SSLContext | None = None,
        access_log: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.tls = tls is not None
        self._context = tls
        self._access_log = access_log
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self._context is not None:
            sock = self._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\nRetry-After: 1\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        print(f"veilpix console: {type(exc).__name__}: {exc}", file=sys.stderr)

    def log_access(self, method: str, path: str, status: int) -> None:
        if self._access_log is not None:
            stamp = time.strftime("%H:%M:%S")
            self._access_log(f"{stamp} {method} {path} {status}")

    @property
    def port(self) -> int:
        return int(self.server_address[1])
