"""Policy: frozen, keyword-only, validated with messages that say what to do."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import veilpix


def test_defaults_and_frozen() -> None:
    p = veilpix.Policy()
    assert p.output_format == "auto" and p.quality is None and p.keep_standard_icc
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.quality = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        veilpix.Policy(100)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_input_pixels": 0}, "max_input_pixels must be a positive whole number"),
        ({"max_bytes": -1}, "max_bytes must be a positive whole number"),
        ({"max_frames": True}, "max_frames must be a positive whole number"),
        ({"output_format": "heic"}, "output_format must be"),
        ({"quality": 0}, "quality must be None or a whole number from 1 to 100"),
        ({"quality": 101}, "quality must be"),
        ({"keep_standard_icc": "yes"}, "keep_standard_icc must be True or False"),
    ],
)
def test_bad_values_raise_config_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(veilpix.ConfigError, match=message) as info:
        veilpix.Policy(**kwargs)  # type: ignore[arg-type]
    assert info.value.hint


def test_replace_validates() -> None:
    p = veilpix.Policy().replace(quality=80)
    assert p.quality == 80
    with pytest.raises(veilpix.ConfigError):
        p.replace(quality=500)
    with pytest.raises(veilpix.ConfigError, match="unexpected keyword"):
        p.replace(nonsense=1)


def test_outbound_set_headers_is_set_header_in_turn() -> None:
    from veilpix import Outbound

    start = [("Content-Type", "a"), ("X-A", "1"), ("transfer-encoding", "chunked"), ("x-a", "2")]
    pairs = [("X-A", "3"), ("Sec-GPC", "1"), ("content-type", "b"), ("x-a", "4")]
    one = Outbound("POST", "https://x.example/", list(start))
    for name, value in pairs:
        one.set_header(name, value)
    one.drop_header("Transfer-Encoding")
    both = Outbound("POST", "https://x.example/", list(start))
    both.set_headers(pairs, drop=["TRANSFER-ENCODING"])
    assert both.headers == one.headers == [("Sec-GPC", "1"), ("content-type", "b"), ("x-a", "4")]
    both.drop_header("sec-gpc", "CONTENT-TYPE")
    assert both.headers == [("x-a", "4")]


@pytest.mark.parametrize(
    ("door", "wording", "other"),
    [
        ("transport", "Policy(", "veilpix.toml"),
        ("sdk", "Policy(", "veilpix.toml"),
        ("gateway", "veilpix.toml", "Policy("),
        ("intercept", "veilpix.toml", "Policy("),
    ],
)
@pytest.mark.parametrize(
    ("policy", "url", "rule"),
    [
        (
            {"allowed_countries": frozenset({"DE"})},
            "https://api.openai.com/v1/responses",
            "destination.country",
        ),
        (
            {"allowed_vendors": frozenset({"anthropic"})},
            "https://api.openai.com/v1/responses",
            "destination.vendor",
        ),
        ({}, "https://example.com/v1/responses", "destination.unknown_host"),
    ],
)
def test_block_hints_speak_the_doors_language(
    tmp_path: Any, door: str, wording: str, other: str, policy: dict[str, Any], url: str, rule: str
) -> None:
    # the proxy doors' users write veilpix.toml; the SDK's users write Python
    guard = veilpix.Guard(
        veilpix.Policy(**policy), tmp_path / "a.db", context=veilpix.Context(door=door)
    )
    with pytest.raises(veilpix.RequestBlocked) as caught:
        guard.prepare(veilpix.Outbound("POST", url, [("content-type", "application/json")], b"{}"))
    assert caught.value.rule == rule
    assert wording in caught.value.hint and other not in caught.value.hint
    guard.log.close()
