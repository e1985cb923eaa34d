"""veilpix.transports: plug veilpix into the vendors' own SDKs as their HTTP transport.

``veilpix.transports`` re-exports the httpx2 pair (what openai 3.x, anthropic, google-genai and
mistralai use); ``veilpix.transports.httpx`` has the same pair for httpx (replicate, fal).
"""

from __future__ import annotations

from veilpix.transports.httpx2 import AsyncGuardTransport, GuardTransport

__all__ = ["AsyncGuardTransport", "GuardTransport"]
