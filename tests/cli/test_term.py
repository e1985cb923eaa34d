"""The terminal module the commands print through: no markup, visible control characters,
styles only on terminals, aligned tables, no wrapping in pipes, a progress line on TTYs only."""

from __future__ import annotations

import io
import json

import pytest

from veilpix.cli._term import (
    Column,
    Progress,
    Table,
    Term,
    color_enabled,
    json_text,
    plural,
    styled,
    visible,
    width,
)


class Tty(io.StringIO):
    """A StringIO that says it is a terminal."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("[bold]x[/]", "[bold]x[/]"),  # no markup language: brackets are text
        ("[@click=(]", "[@click=(]"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("line1\nline2", "line1\\nline2"),
        ("over\rwrite", "over\\rwrite"),
        ("tab\there", "tab\\there"),
        ("bell\x07", "bell\\x07"),
        ("del\x7f", "del\\x7f"),
        ("csi\x9b2J", "csi\\x9b2J"),  # the 8-bit CSI
        ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
        ("\u2066iso\u2069", "\\u2066iso\\u2069"),
        ("para\u2029graph", "para\\u2029graph"),
        ("bad\udcffbyte", "bad\\xffbyte"),  # a file name byte that is not UTF-8
        ("東京 ✓ café e\u0301", "東京 ✓ café e\u0301"),  # printable text stays as it is
        ("family \U0001f468\u200d\U0001f469", "family \U0001f468\u200d\U0001f469"),
        # invisible characters that make two names look alike (found by review)
        ("pass\u200bport.jpg", "pass\\u200bport.jpg"),
        ("soft\u00adhyphen", "soft\\xadhyphen"),
        ("\ufeffbom", "\\ufeffbom"),
        ("word\u2060joiner", "word\\u2060joiner"),
        ("tag\U000e0041\U000e007f", "tag\\U000e0041\\U000e007f"),
        ("filler\u3164", "filler\\u3164"),
    ],
)
def test_visible_escapes_control_characters_only(value: str, shown: str) -> None:
    assert visible(value) == shown


def test_width_counts_terminal_cells() -> None:
    assert width("abc") == 3
    assert width("東京") == 4
    assert width("e\u0301") == 1  # a combining accent takes no cell
    assert width("\U0001f600") == 2


def test_plural() -> None:
    assert plural(1, "file") == "1 file"
    assert plural(0, "file") == "0 files"
    assert plural(2, "entry", "entries") == "2 entries"


def test_json_text_escapes_invisible_characters_as_valid_json() -> None:
    value = "pass\u200bport\U000e0041\ufeff.jpg"
    text = json_text({"path": value})
    assert "\\u200b" in text and "\\udb40\\udc41" in text and "\\ufeff" in text
    assert json.loads(text) == {"path": value}


def test_json_text_is_the_same_json_with_terminal_controls_escaped() -> None:
    obj = {"v": "a\x1b[2J\u202e\x9b東京[bold]", "name": "bad\udcff.jpg"}
    text = json_text(obj)
    for ch in ("\x1b", "\u202e", "\x9b", "\udcff"):
        assert ch not in text
    assert "東京[bold]" in text  # readable, not \u-escaped
    assert json.loads(text) == obj


def test_a_table_aligns_by_display_width_and_never_wraps_off_a_terminal() -> None:
    out = io.StringIO()
    term = Term(out)
    assert (term.color, term.columns) == (False, 0)
    table = Table([Column("name"), Column("n", align="right"), Column("value", fold=True)])
    table.add_row("東京", "1", "x" * 300)
    table.add_row("ab", "22", "[red]y[/]")
    table.add_row("e\u0301", "3", "tab\there")
    term.table(table)
    lines = out.getvalue().splitlines()
    assert lines == [
        "name   n  value",
        "東京   1  " + "x" * 300,  # no wrapping in a pipe
        "ab    22  [red]y[/]",
        "e\u0301      3  tab\\there",
    ]


def test_a_table_folds_only_foldable_columns_on_a_narrow_terminal() -> None:
    out = Tty()
    term = Term(out, color=False, columns=40)
    table = Table([Column("path"), Column("value", fold=True)])
    path = "/very/long/path/that/must/stay/whole.jpg"
    table.add_row(path, "one two three four five six seven eight nine ten")
    term.table(table)
    lines = out.getvalue().splitlines()
    assert lines[1].startswith(path + "  one")  # the path is not broken
    assert len(lines) > 3  # the value was folded onto more lines
    assert all(line.startswith(" " * (len(path) + 2)) for line in lines[2:])
    folded = " ".join(line.strip() for line in lines[1:]).replace(path, "").split()
    assert folded == ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def test_styles_wrap_whole_pieces_only_when_color_is_on() -> None:
    plain, colored = io.StringIO(), io.StringIO()
    Term(plain, color=False).print(styled("bad\x1b[0m", "red"), " ok")
    Term(colored, color=True).print(styled("bad\x1b[0m", "red"), " ok")
    assert plain.getvalue() == "bad\\x1b[0m ok\n"
    assert colored.getvalue() == "\x1b[31mbad\\x1b[0m\x1b[0m ok\n"


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": ""}, True, True),  # empty: unset
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": "0"}, True, False),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False, False),
        ({"TERM": "dumb"}, True, False),
    ],
)
def test_color_follows_the_terminal_and_the_environment(
    env: dict[str, str], tty: bool, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stream = Tty() if tty else io.StringIO()
    assert color_enabled(stream) is expected


def test_progress_draws_nothing_off_a_terminal() -> None:
    out = io.StringIO()
    with Progress(3, "scrubbing", stream=out) as bar:
        for _ in range(3):
            bar.advance()
    assert out.getvalue() == ""


def test_progress_on_a_terminal_is_throttled_and_cleared() -> None:
    out = Tty()
    now = [0.0]
    bar = Progress(100, "scrubbing", stream=out, clock=lambda: now[0], interval=0.1)
    for _ in range(50):  # all at once: drawn once (the first), not fifty times
        bar.advance()
    assert out.getvalue().count("\r") == 1 and "1/100" in out.getvalue()
    now[0] = 1.0
    bar.advance()
    assert "51/100" in out.getvalue()
    bar.close()
    assert out.getvalue().endswith("\r\x1b[2K")
    assert "\n" not in out.getvalue()


def test_progress_can_be_turned_off() -> None:
    out = Tty()
    bar = Progress(5, "x", stream=out, enabled=False)
    bar.advance()
    bar.close()
    assert out.getvalue() == ""


def test_a_stream_that_cannot_encode_gets_escapes_not_a_crash() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    Term(stream).print("⚠ 東京")
    stream.flush()
    assert raw.getvalue() == b"\\u26a0 \\u6771\\u4eac\n"


def test_a_long_word_is_cut_into_lines_that_fit_in_one_pass() -> None:
    from veilpix.cli._term import _fold

    word = "ö" * 30_001 + "東"  # no space to break at; a wide character at the end
    lines = _fold(word, 24)
    assert "".join(lines) == word
    assert all(width(line) <= 24 for line in lines) and width(lines[-1]) == 3
    assert _fold("東東東", 1) == ["東", "東", "東"]  # a piece holds one character however wide
