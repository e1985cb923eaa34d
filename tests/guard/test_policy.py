"""Policy: frozen, keyword-only, validated with messages that say what to do."""

from __future__ import annotations

import dataclasses

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
