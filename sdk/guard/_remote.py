"""Fetching a remote image the request names, to sanitize and embed it instead of letting
the vendor download the original: https only, capped, no credentials, few redirects."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from veilpix._net import is_loopback
from veilpix._policy import Policy
from veilpix.audit._record import redact_url
from veilpix.guard._rules import Block

__all__ = ["Fetch", "fetch_url"]

# (url, policy) -> (bytes, content type): the downloader; tests and proxies give their own
Fetch = Callable[[str, Policy], tuple[bytes, str | None]]


def fetch_url(url: str, policy: Policy) -> tuple[bytes, str | None]:
    """Download a remote image for inlining: https only (http to loopback), size- and
    time-capped, no credentials sent, at most 3 redirects and each to https."""
    import httpx2

    limit = policy.remote_max_bytes
    try:
        with httpx2.Client(timeout=policy.remote_timeout, follow_redirects=False) as client:
            for _hop in range(4):
                parts = urlsplit(url)
                if parts.scheme != "https" and not (
                    parts.scheme == "http" and is_loopback(parts.hostname or "")
                ):
                    raise Block("remote_images", f"refusing to fetch {redact_url(url)}: not https")
                with client.stream("GET", url) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = str(resp.url.join(resp.headers["location"]))
                        continue
                    if resp.status_code != 200:
                        raise Block(
                            "remote_images",
                            f"fetching {redact_url(url)} gave HTTP {resp.status_code}",
                        )
                    chunks, size = [], 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise Block(
                                "remote_images",
                                f"the remote image {redact_url(url)} is over {limit:,} bytes",
                                "raise Policy(remote_max_bytes=...) or send a smaller image",
                            )
                        chunks.append(chunk)
                    return b"".join(chunks), resp.headers.get("content-type")
            raise Block("remote_images", f"too many redirects fetching {redact_url(url)}")
    except httpx2.HTTPError as exc:
        raise Block("remote_images", f"could not fetch {redact_url(url)}: {exc}") from exc
