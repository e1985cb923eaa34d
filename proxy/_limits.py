"""Bounded work for both doors: who a client is (for the per-client connection cap), how
slowly a request body may arrive, and how much memory the requests in progress may hold.

Everything here runs on one event loop (one per worker process) and needs no lock.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from veilpix.adapters._base import OPENAI_ERRORS

if TYPE_CHECKING:
    from veilpix._config import ProxyConfig

__all__ = [
    "RETRY_AFTER",
    "BodyClock",
    "ConnectionLimits",
    "Lease",
    "MemoryBudget",
    "busy_response",
    "client_key",
]

RETRY_AFTER = "1"  # seconds, in every 503 the doors answer because they are busy
# Bytes of memory one request is taken to hold per byte of its body: the raw body, the images
# decoded from it (compressed images grow several times when decoded), the re-encoded images
# and the rebuilt body. Decoding itself is also bounded by the policy's pixel and byte caps
# and by the gateway's few worker threads.
MEMORY_PER_BODY_BYTE = 8


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """The client-side limits of a door (``[proxy]`` in ``veilpix.toml``).

    ``header_timeout``: a request head must be complete this long after the connection was
    accepted (or, on a kept-alive connection, after its first byte). ``idle_timeout``: a
    kept-alive connection may idle this long between requests, and a request body may pause
    this long. ``min_body_rate``: after its first ``idle_timeout`` seconds a body must have
    arrived at this many bytes per second on average. ``max_connections``: requests in
    progress at once (``/_veilpix/health`` is always answered). ``max_connections_per_client``:
    open connections from one address (an IPv6 client: its /64); more get a quick 503.
    ``max_head``: bytes of a request line and its headers."""

    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    min_body_rate: int = 8192
    max_connections: int = 256
    max_connections_per_client: int = 32
    max_head: int = 64 * 1024

    @classmethod
    def from_config(cls, settings: ProxyConfig) -> ConnectionLimits:
        """From a :class:`~veilpix.ProxyConfig` (``config.proxy``)."""
        return cls(
            header_timeout=settings.header_timeout,
            idle_timeout=settings.idle_timeout,
            min_body_rate=settings.min_body_rate,
            max_connections=settings.max_connections,
            max_connections_per_client=settings.max_connections_per_client,
        )


def client_key(peer: Any) -> str:
    """Who a connection comes from, for the per-client cap: the IPv4 address, or the /64 of
    an IPv6 one (one host usually holds a whole /64). ``""`` when the peer is unknown (a Unix
    socket)."""
    if not isinstance(peer, tuple) or not peer:
        return ""
    host = str(peer[0]).split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class BodyClock:
    """When a request body that is still arriving is overdue: no byte for ``idle`` seconds,
    or (after the first ``idle`` seconds) less than ``rate`` bytes per second on average.
    ``now`` values come from the event loop's clock."""

    __slots__ = ("idle", "last", "rate", "received", "start")

    def __init__(self, now: float, idle: float, rate: int) -> None:
        self.idle, self.rate = idle, rate
        self.start = self.last = now
        self.received = 0

    def progress(self, now: float, size: int) -> None:
        if size:
            self.received += size
            self.last = now

    def restart(self, now: float) -> None:
        """The wait was the server's (reading paused, a 100 Continue not sent yet)."""
        self.start = self.last = now
        self.received = 0

    def deadline(self) -> float:
        return min(self.last + self.idle, self.start + self.idle + self.received / self.rate)


class MemoryBudget:
    """Bytes of memory the requests in progress may hold together. A request takes a
    :class:`Lease` and grows it with its body; a request alone always fits (its body is
    capped by ``max_body``), so a budget smaller than one request slows nothing but
    concurrency."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the memory budget must be above 0")
        self.limit = limit
        self.used = 0

    def lease(self) -> Lease:
        return Lease(self)


class Lease:
    """One request's share of a :class:`MemoryBudget`; give it back with :meth:`release`."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    def reserve(self, total: int) -> bool:
        """Hold at least ``total`` bytes; False (and nothing more taken) when the budget
        cannot give them while other requests hold some."""
        budget = self.budget
        want = min(total, budget.limit)  # one request alone always fits
        extra = want - self.held
        if extra <= 0:
            return True
        if budget.used > self.held and budget.used + extra > budget.limit:
            return False
        budget.used += extra
        self.held = want
        return True

    def shrink_to(self, size: int) -> None:
        """Hold only ``size`` bytes (or what is held, when that is less)."""
        if size < self.held:
            self.budget.used -= self.held - size
            self.held = size

    def release(self) -> None:
        self.shrink_to(0)


def busy_response(message: str, code: str = "veilpix_busy") -> bytes:
    """A complete HTTP/1.1 ``503`` (``Retry-After``, ``Connection: close``) with an error
    body in the shape most vendors' SDKs read (OpenAI's), for a connection turned away
    before its request was read."""
    body = json.dumps(OPENAI_ERRORS.render(503, message, code)).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"retry-after: {RETRY_AFTER}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body
