"""Real loopback servers for gateway tests: uvicorn runs an ASGI app in a thread on an
ephemeral port. Nothing listens beyond 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from veilpix.proxy._http import http_protocol


class Server:
    def __init__(self, app: Any, host: str = "127.0.0.1", http: Any = None) -> None:
        # by default the HTTP protocol `veilpix proxy` runs (writes gathered, disconnects
        # reported through the scope); "h11" or "httptools" for uvicorn's own
        config = uvicorn.Config(
            app, host=host, port=0, log_level="warning", lifespan="on", http=http or http_protocol()
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        sock = self.server.servers[0].sockets[0]
        return int(sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeVendor:
    """An ASGI fake vendor: records what arrives; answers JSON, streams SSE for
    ``"stream": true`` bodies, hangs on ``/hang``."""

    seen: list[Seen] = field(default_factory=list)
    reply: Any = field(default_factory=lambda: {"ok": True})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append(
            Seen(scope["method"], scope["path"], scope["query_string"].decode(), headers, body)
        )
        if scope["path"].endswith("/hang"):  # answer nothing until the caller goes away
            import anyio

            with anyio.move_on_after(30):
                while (await receive())["type"] != "http.disconnect":
                    pass
            return
        stream = False
        if body[:1] == b"{":
            try:
                stream = bool(json.loads(body).get("stream"))
            except ValueError:
                stream = False
        if stream:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for i in range(3):
                chunk = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}
                    ],
                }
                await send(
                    {
                        "type": "http.response.body",
                        "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                        "more_body": True,
                    }
                )
            await send(
                {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}
            )
            return
        data = json.dumps(self.reply).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"req_fake")],
            }
        )
        await send({"type": "http.response.body", "body": data, "more_body": False})

    @property
    def last(self) -> Seen:
        return self.seen[-1]
