"""``Policy``: the one frozen, keyword-only configuration object veilpix runs on.

Metadata stripping is not a setting: it is always on. What the policy controls is how far
veilpix goes to keep the picture (colour profiles, output format, quality) and the limits
that protect the machine from hostile input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from veilpix._errors import ConfigError

if TYPE_CHECKING:
    from veilpix.image._faces import FaceDetector

__all__ = ["EEA", "Documents", "FaceMode", "OutputFormat", "Policy", "RemoteImages"]

OutputFormat = Literal["auto", "jpeg", "png", "webp"]
FaceMode = Literal["off", "blur", "pixelate", "fill"]
RemoteImages = Literal["auto", "inline", "block", "allow"]
Documents = Literal["allow", "block"]

# EU and EEA member states (ISO 3166-1 alpha-2; Greece is "GR"), for Policy(allowed_countries=EEA).
EEA = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
    ]
)

_MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Policy:
    """What veilpix may do to an image and the limits it enforces.

    ``output_format="auto"`` keeps each image's format where that format can be written
    without metadata (JPEG, PNG, WebP, GIF, TIFF, BMP); HEIC/HEIF and AVIF become JPEG, or PNG
    when they have alpha or several frames. ``quality=None`` re-encodes JPEG with the input's
    own quantization tables (so quality matches the source) and other lossy output at 90.
    ``keep_standard_icc`` keeps an sRGB, Display P3 or Adobe RGB profile; any other profile
    is applied to the pixels (converted to sRGB) and dropped, because a camera or device
    profile can identify where a picture came from.

    Every output is verified by scanning it again. Re-encoded outputs are also decoded; a
    lossless strip copies compressed image data bit for bit and is decoded only when
    ``verify_decode=True`` (slower, catches damage that was already in the input).

    Faces: ``faces="blur"`` (Gaussian), ``"pixelate"`` or ``"fill"`` (solid) hides every face
    found, over the detected box grown ``face_padding`` times with a soft elliptical edge.
    ``face_detector`` replaces the built-in CenterFace detector (see ``veilpix.FaceDetector``);
    ``face_rotations=False`` skips the passes that look for faces in sideways and upside-down
    pictures. ``require_consent_for_faces=True`` blocks an image in which faces are left
    unblurred unless the call carries a consent reference. If detection fails for any reason
    the image is blocked, never sent unblurred.

    Size: ``max_side`` and ``max_pixels`` shrink the picture (aspect kept, never enlarged)
    until both hold. ``max_input_pixels`` is different: a safety limit that refuses inputs.

    Limits (``ImageTooLarge`` before anything is decoded): ``max_bytes`` of input,
    ``max_input_pixels`` in one frame or page, ``max_frames``, ``max_total_pixels`` in all
    frames together. When the picture has to be decoded and re-encoded (turned, colour
    converted, blurred, downscaled or converted to another format), its work is estimated
    first and held to ``max_work_seconds`` (estimated seconds on one core, not a timeout)
    and ``max_memory`` (estimated peak bytes of the decoded frames and their copies).

    Destinations (for requests sent through a transport, the Client or the proxy):
    ``allowed_vendors`` (registry names such as "openai"; None allows every registered vendor),
    ``allowed_countries`` (ISO codes of where requests are processed, e.g. ``veilpix.EEA``;
    None allows any), ``region`` (send to the vendor's regional host of that name, e.g. "eu",
    where the vendor offers one), ``https_only`` (plain http only to loopback), and
    ``vendor_hosts`` (host -> vendor for Azure resources, gateways and test servers; such a
    host's country is unknown unless ``host_countries`` names it). Requests to hosts no
    adapter claims are blocked.

    Remote images (URLs the vendor would fetch itself, getting the original): ``"inline"``
    fetches, sanitizes and embeds them where the endpoint takes data URIs (blocks otherwise),
    ``"block"`` refuses, ``"allow"`` lets the URL through (recorded), ``"auto"`` (default)
    inlines where possible and blocks elsewhere. Fetches are capped by ``remote_max_bytes``
    and ``remote_timeout`` seconds.

    Privacy controls: ``privacy_controls`` applies each vendor's real per-request levers;
    ``content_usage`` is sent as the ``Content-Usage`` header (IETF AI-preferences draft; None
    sends nothing) and ``sec_gpc`` adds ``Sec-GPC: 1``. ``require_controls`` names controls
    (as in ``docs/vendors.md``) a vendor must apply per request, or the call is blocked.
    ``max_request_bytes`` caps a request body (decompressed).

    Documents: other files in a request that may carry personal data (PDF, Office documents,
    audio, video) are sent and recorded as a data category with ``documents="allow"``
    (default), or refused with ``"block"``. Images inside them that veilpix can reach (a zip
    based Office file) are cleaned either way.
    """

    max_bytes: int = 100 * _MIB
    max_input_pixels: int = 100_000_000
    max_frames: int = 1000
    max_total_pixels: int = 400_000_000
    max_work_seconds: float = 2.0
    max_memory: int = 512 * _MIB
    output_format: OutputFormat = "auto"
    quality: int | None = None
    keep_standard_icc: bool = True
    verify_decode: bool = False
    faces: FaceMode = "off"
    face_padding: float = 1.6
    face_rotations: bool = True
    face_detector: FaceDetector | None = field(default=None, compare=False)
    require_consent_for_faces: bool = False
    max_side: int | None = None
    max_pixels: int | None = None
    allowed_vendors: frozenset[str] | None = None
    allowed_countries: frozenset[str] | None = None
    region: str | None = None
    https_only: bool = True
    vendor_hosts: Mapping[str, str] = field(default_factory=dict)
    host_countries: Mapping[str, str] = field(default_factory=dict)
    remote_images: RemoteImages = "auto"
    remote_max_bytes: int = 20 * _MIB
    remote_timeout: float = 15.0
    privacy_controls: bool = True
    content_usage: str | None = "train-ai=n"
    sec_gpc: bool = False
    require_controls: frozenset[str] = frozenset()
    max_request_bytes: int = 256 * _MIB
    documents: Documents = "allow"

    @property
    def looks_for_faces(self) -> bool:
        return self.faces != "off" or self.require_consent_for_faces

    @property
    def changes_pixels(self) -> bool:
        """True when the policy can change the picture itself (blur or downscale)."""
        return self.faces != "off" or self.max_side is not None or self.max_pixels is not None

    def __post_init__(self) -> None:
        for name in (
            "max_bytes",
            "max_input_pixels",
            "max_frames",
            "max_total_pixels",
            "max_memory",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(
                    f"Policy.{name} must be a positive whole number, got {value!r}",
                    hint=f"for example Policy({name}={getattr(Policy, name)})",
                )
        if (
            isinstance(self.max_work_seconds, bool)
            or not isinstance(self.max_work_seconds, int | float)
            or not self.max_work_seconds > 0  # NaN too; inf turns the time budget off
        ):
            raise ConfigError(
                f"Policy.max_work_seconds must be a number of seconds above 0, "
                f"got {self.max_work_seconds!r}",
                hint="for example Policy(max_work_seconds=10) for big animations",
            )
        if self.output_format not in ("auto", "jpeg", "png", "webp"):
            raise ConfigError(
                f"Policy.output_format must be 'auto', 'jpeg', 'png' or 'webp', "
                f"got {self.output_format!r}",
                hint="'auto' keeps each image's own format where it is safe to",
            )
        if self.quality is not None and (
            isinstance(self.quality, bool)
            or not isinstance(self.quality, int)
            or not 1 <= self.quality <= 100
        ):
            raise ConfigError(
                f"Policy.quality must be None or a whole number from 1 to 100, "
                f"got {self.quality!r}",
                hint="None re-encodes at the quality of the input",
            )
        if self.faces not in ("off", "blur", "pixelate", "fill"):
            raise ConfigError(
                f"Policy.faces must be 'off', 'blur', 'pixelate' or 'fill', got {self.faces!r}",
                hint="'blur' is a strong Gaussian blur; 'fill' paints the face over",
            )
        if (
            isinstance(self.face_padding, bool)
            or not isinstance(self.face_padding, int | float)
            or not 1.0 <= self.face_padding <= 4.0
        ):
            raise ConfigError(
                f"Policy.face_padding must be a number from 1.0 to 4.0, got {self.face_padding!r}",
                hint="1.6 (the default) grows each face box by 30 % on every side",
            )
        if self.face_detector is not None and not callable(
            getattr(self.face_detector, "detect", None)
        ):
            raise ConfigError(
                "Policy.face_detector must have a detect(rgb, *, scale=1.0) method",
                hint="see veilpix.FaceDetector",
            )
        for name in ("max_side", "max_pixels"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 16
            ):
                raise ConfigError(
                    f"Policy.{name} must be None or a whole number of at least 16, got {value!r}",
                    hint="for example Policy(max_side=2048)",
                )
        self._check_destinations()
        for name in (
            "keep_standard_icc",
            "verify_decode",
            "face_rotations",
            "require_consent_for_faces",
            "https_only",
            "privacy_controls",
            "sec_gpc",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"Policy.{name} must be True or False, got {getattr(self, name)!r}"
                )

    def _check_destinations(self) -> None:
        # Sets given as lists or tuples are accepted and frozen; names are compared lower-case,
        # countries upper-case.
        def frozen(name: str, values: object, norm: str) -> None:
            if values is None:
                return
            if isinstance(values, str) or not isinstance(values, frozenset | set | list | tuple):
                raise ConfigError(
                    f"Policy.{name} must be a set of names, got {values!r}",
                    hint=f"for example Policy({name}={{'openai'}})"
                    if norm == "lower"
                    else "for example Policy(allowed_countries=veilpix.EEA)",
                )
            items = frozenset(getattr(str(v), norm)() for v in values)
            object.__setattr__(self, name, items)

        frozen("allowed_vendors", self.allowed_vendors, "lower")
        frozen("allowed_countries", self.allowed_countries, "upper")
        frozen("require_controls", self.require_controls, "lower")
        for name in ("vendor_hosts", "host_countries"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ConfigError(f"Policy.{name} must map host names to names, got {value!r}")
            object.__setattr__(
                self, name, MappingProxyType({str(k).lower(): str(v) for k, v in value.items()})
            )
        if self.remote_images not in ("auto", "inline", "block", "allow"):
            raise ConfigError(
                f"Policy.remote_images must be 'auto', 'inline', 'block' or 'allow', "
                f"got {self.remote_images!r}",
                hint="'auto' inlines remote images where the endpoint takes data URIs",
            )
        if self.documents not in ("allow", "block"):
            raise ConfigError(
                f"Policy.documents must be 'allow' or 'block', got {self.documents!r}",
                hint="'allow' sends PDFs, Office files and audio and records them; 'block' refuses",
            )
        for name in ("remote_max_bytes", "max_request_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"Policy.{name} must be a positive whole number, got {value!r}")
        if (
            isinstance(self.remote_timeout, bool)
            or not isinstance(self.remote_timeout, int | float)
            or self.remote_timeout <= 0
        ):
            raise ConfigError(
                f"Policy.remote_timeout must be seconds above 0, got {self.remote_timeout!r}"
            )
        if self.region is not None and not isinstance(self.region, str):
            raise ConfigError(
                f"Policy.region must be a region name such as 'eu', got {self.region!r}"
            )
        if self.content_usage is not None and (
            not isinstance(self.content_usage, str)
            or "\r" in self.content_usage
            or "\n" in self.content_usage
        ):
            raise ConfigError(
                f"Policy.content_usage must be a header value or None, got {self.content_usage!r}"
            )

    def replace(self, **changes: object) -> Policy:
        """Return a copy with some fields changed (validated like the constructor)."""
        try:
            return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(str(exc), hint="see help(veilpix.Policy) for the fields") from exc
