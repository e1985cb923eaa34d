"""The steps a :class:`veilpix.Client` plan yields, and the values it works with.

Each operation of each vendor is a *plan* (``veilpix.client.plans``): a generator that yields
the steps it needs (an :class:`Http` request through the guard, a :class:`Sleep` between polls,
a :class:`Download` of a result URL) and receives each step's outcome (a :class:`Reply`, the
seconds elapsed, a :class:`Fetched`), then returns an :class:`Output`. Plans are pure: no
sockets, no clocks, no sleeping; the sync and async clients run the same plans, so every
vendor's logic exists once. A :class:`Call` is everything one operation needs, resolved by the
client before its plan starts; a :class:`VendorSpec` is what the client knows of one vendor.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from veilpix._errors import ConfigError
from veilpix.formats._registry import extension_for

__all__ = [
    "Call",
    "Download",
    "Fetched",
    "Http",
    "InputImage",
    "OutImage",
    "Output",
    "Plan",
    "Reply",
    "Size",
    "Sleep",
    "Step",
    "VendorSpec",
    "parse_size",
]


# -- the steps a plan yields, and what it gets back --------------------------------------------


@dataclass(frozen=True)
class Http:
    """One request to the vendor, sent through the guard. ``prompt`` is the prompt this
    request carries (recorded with it); ``optional`` requests (best-effort cancels) answer
    None instead of raising on a vendor error."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    prompt: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class Sleep:
    """Pause between polls. Answered with the seconds since the call started."""

    seconds: float


@dataclass(frozen=True)
class Download:
    """Fetch a result URL the vendor gave (no credentials, https only). Answered with a
    :class:`Fetched`."""

    url: str


Step = Http | Sleep | Download


@dataclass(frozen=True)
class Reply:
    """A vendor's 2xx answer (header names lower-case)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class InputImage:
    """An image to send: the caller's bytes and their sniffed media type."""

    data: bytes = field(repr=False)
    media_type: str

    @property
    def extension(self) -> str:
        return extension_for(self.media_type) or ".bin"

    def data_uri(self) -> str:
        return f"data:{self.media_type};base64,{self.b64()}"

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class OutImage:
    data: bytes = field(repr=False)
    media_type: str | None = None  # what the vendor said; the client sniffs the bytes too
    url: str | None = None  # where it was downloaded from, when it came as a URL


@dataclass
class Output:
    images: list[OutImage] = field(default_factory=list)
    text: str | None = None
    raw: Any = None
    finish_reason: str | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class Call:
    """Everything one operation needs, resolved by the client before the plan starts."""

    vendor: str
    display: str
    model: str
    operation: str
    prompt: str
    base_url: str
    auth: tuple[tuple[str, str], ...] = field(repr=False)
    images: tuple[InputImage, ...] = ()
    mask: InputImage | None = None
    size: Size | None = None
    n: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)
    extra_headers: tuple[tuple[str, str], ...] = ()
    image_field: str | None = None
    mask_field: str | None = None
    poll_interval: float = 1.0
    poll_timeout: float = 600.0
    trusted_hosts: frozenset[str] = frozenset()


Plan = Generator[Step, Any, Output]


@dataclass(frozen=True)
class VendorSpec:
    """What :class:`veilpix.Client` knows about one vendor, declared by its module in
    ``veilpix.client.plans``. ``name`` is the vendor's adapter name (``veilpix.adapters``);
    ``plans`` maps each operation it supports ("generate", "edit", "describe") to its plan;
    ``auth`` turns the API key into the request headers that carry it."""

    name: str
    env: tuple[str, ...]  # environment variables the key is read from, in order
    base_url: str
    auth: Callable[[str], tuple[tuple[str, str], ...]]
    plans: Mapping[str, Callable[[Call], Plan]]
    # other spellings of the vendor in a model name ("google/..." for gemini)
    aliases: tuple[str, ...] = ()
    # prefixes of the vendor's own model ids, which name the vendor and stay in the model
    # name ("fal-ai/flux/dev" is fal's app "fal-ai/flux/dev")
    model_prefixes: tuple[str, ...] = ()
    # a key read from the environment in a vendor's own way, tried before ``env``
    read_key: Callable[[Mapping[str, str]], str | None] | None = None

    def key_from(self, env: Mapping[str, str]) -> str | None:
        """The API key in ``env`` (``os.environ``), or None."""
        key = self.read_key(env) if self.read_key is not None else None
        return key or next((env[v] for v in self.env if env.get(v)), None)


# -- sizes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    """A requested output size: pixels, an aspect ratio, or a vendor label ("2K", "square_hd")."""

    width: int | None = None
    height: int | None = None
    ratio: str | None = None
    label: str | None = None

    @property
    def as_ratio(self) -> str | None:
        if self.ratio is not None:
            return self.ratio
        if self.width and self.height:
            g = math.gcd(self.width, self.height)
            return f"{self.width // g}:{self.height // g}"
        return None

    def __str__(self) -> str:
        if self.width and self.height:
            return f"{self.width}x{self.height}"
        return self.ratio or self.label or ""


_WH = re.compile(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*")
_RATIO = re.compile(r"\s*(\d{1,3})\s*:\s*(\d{1,3})\s*")


def parse_size(size: str | tuple[int, int] | None) -> Size | None:
    """``"1024x768"`` or ``(1024, 768)`` (pixels), ``"16:9"`` (aspect ratio), anything else a
    vendor label passed on as it is."""
    if size is None:
        return None
    if isinstance(size, tuple):
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise ConfigError(f"size must be (width, height) in pixels, got {size!r}")
        return Size(width=size[0], height=size[1])
    if not isinstance(size, str) or not size.strip():
        raise ConfigError(f"size must be a string such as '1024x1024' or '16:9', got {size!r}")
    if m := _WH.fullmatch(size):
        return Size(width=int(m[1]), height=int(m[2]))
    if m := _RATIO.fullmatch(size):
        return Size(ratio=f"{int(m[1])}:{int(m[2])}")
    return Size(label=size.strip())
