"""Everything printed from data is printed literally (issue 18, item 1).

File names, metadata values, error hints and transfer-log fields are data: ``[/]`` and
``[bold]`` print as written (they once crashed or vanished in a markup language), and control
characters (ANSI escapes, carriage returns, newlines, bidi overrides) are made visible so a
value can never drive the terminal. Output in a pipe is never wrapped.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

import factories as F
from clikit import clean_env, run
from veilpix.cli._term import visible


def run_tty(*args: str, columns: int = 80, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run with standard output and error on a pseudo-terminal ``columns`` wide; returns the
    exit code and everything written (line ends as "\\n")."""
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("needs a POSIX pseudo-terminal")
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = clean_env({"TERM": "xterm-256color", **(env or {})})
    env.pop("COLUMNS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "veilpix", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(timeout=120)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


HOSTILE_NAMES = [  # ("/" cannot be in a file name: "[/]" is a metadata value below)
    "x[@click=(]",
    "holiday[bold]2024",
    "[link=https:example.com]y",
    "[red]",
    "clear\x1b[2Jscreen",
    "over\rwrite",
    "new\nline",
    "rtl\u202egpj.exe",
    "東京の写真",
    "long-" + "a" * 180,
]
# raw characters no output may carry (our own styles are off in a pipe)
RAW = ("\x1b", "\r", "\u202e", "\x07")


# the map link of factories.GPS, as inspect prints it
LINK = "  https://www.openstreetmap.org/?mlat=52.516275&mlon=13.377703#map=15/52.51628/13.37770"


def _no_raw(text: str) -> None:
    for ch in RAW:
        assert ch not in text, f"{ch!r} reached the terminal"


def hostile_png(values: dict[str, str]) -> bytes:
    """A PNG whose iTXt chunks hold ``values`` (iTXt is UTF-8: any text fits)."""
    info = PngImagePlugin.PngInfo()
    for key, value in values.items():
        info.add_itxt(key, value)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


HOSTILE_VALUES = {
    "Author": "[/]",
    "Comment": "[@click=(] [bold]bold?[/bold] [link=x]link[/link]",
    "Title": "clear\x1b[2Jthe screen \x1b]0;title\x07",
    "Description": "rtl\u202eevil 東京 " + "long " * 80,
}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_inspect_prints_file_names_as_written(name: str, tmp_path: Path) -> None:
    (tmp_path / f"{name}.jpg").write_bytes(F.jpeg())
    (tmp_path / "zz-after.jpg").write_bytes(F.jpeg())  # the report goes on after it
    path = str(tmp_path / f"{name}.jpg")
    res = run("inspect", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert any(line.startswith(visible(path) + "  JPEG 64×48") for line in lines), res.stdout
    assert "zz-after.jpg" in res.stdout
    _no_raw(res.stdout)
    js = run("inspect", str(tmp_path), "--json")
    assert js.returncode == 0
    _no_raw(js.stdout)
    assert path in [doc["path"] for doc in json.loads(js.stdout)]


def test_inspect_prints_metadata_values_as_written(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(hostile_png(HOSTILE_VALUES))
    js = run("inspect", str(tmp_path / "a.png"), "--json")
    assert js.returncode == 0, js.stderr
    _no_raw(js.stdout)
    values = {f["label"]: f["value"] for f in json.loads(js.stdout)[0]["findings"]}
    assert values["Author"] == "[/]"
    assert "\x1b[2J" in values["Title"] and "\u202e" in values["Description"]  # kept as data
    res = run("inspect", str(tmp_path / "a.png"))
    assert res.returncode == 0, res.stderr
    _no_raw(res.stdout)
    for value in values.values():
        assert visible(value) in res.stdout  # whole, on one line: a pipe is never wrapped
    assert "\\x1b[2J" in res.stdout and "\\u202e" in res.stdout


def test_inspect_reports_undecodable_file_names(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path)
    try:
        with open(os.path.join(folder, b"bad\xff.jpg"), "wb") as fh:
            fh.write(F.jpeg())
    except OSError:  # pragma: no cover - a file system that insists on UTF-8 names
        pytest.skip("this file system refuses names that are not UTF-8")
    res = run("inspect", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "bad\\xff.jpg  JPEG" in res.stdout
    js = run("inspect", str(tmp_path), "--json")
    (doc,) = json.loads(js.stdout)
    assert os.fsencode(doc["path"]).endswith(b"bad\xff.jpg")


def test_error_hints_keep_their_brackets(tmp_path: Path) -> None:
    (tmp_path / "not-an-image.jpg").write_bytes(b"hello, world")
    res = run("inspect", str(tmp_path / "not-an-image.jpg"), cwd=tmp_path)
    assert res.returncode == 1
    # the command names this install's source (a checkout, a wheel, the index), as the
    # same interpreter sees it from the same folder
    code = "from veilpix._install import install_command; print(install_command('heif'))"
    command = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.strip()
    assert "[heif]" in command and command in res.stdout


def test_long_lines_and_links_are_never_broken_in_a_pipe(tmp_path: Path) -> None:
    deep = tmp_path / ("folder-" + "b" * 60) / ("sub-" + "c" * 60)
    deep.mkdir(parents=True)
    (deep / "photo.jpg").write_bytes(F.jpeg())
    res = run("inspect", str(deep / "photo.jpg"))
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0].startswith(str(deep / "photo.jpg"))
    assert LINK in lines


@pytest.mark.skipif(not shutil.which("exiftool"), reason="exiftool is not installed")
def test_exiftool_values_that_look_like_markup(tmp_path: Path) -> None:
    """The issue's report, as the newcomer made it: exiftool -Artist='[/]' a.jpg."""
    (tmp_path / "a.jpg").write_bytes(F.jpeg(exif=True))
    (tmp_path / "b.jpg").write_bytes(F.jpeg())
    subprocess.run(
        [
            "exiftool",
            "-q",
            "-q",
            "-overwrite_original",
            "-Artist=[/]",
            "-Copyright=[@click=(]",
            "-XMP-dc:Title=[link=x]t[/link]",
            str(tmp_path / "a.jpg"),
        ],
        check=True,
    )
    res = run("inspect", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    for text in ("[/]", "[@click=(]", "[link=x]t[/link]", "b.jpg  JPEG"):
        assert text in res.stdout


def test_scrub_summary_prints_names_and_reasons_as_written(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "good[bold].jpg").write_bytes(F.jpeg())
    (src / "broken[red]\x1b[31m\u202e.jpg").write_bytes(F.jpeg()[:-300])
    res = run("scrub", str(src), "-o", str(tmp_path / "out"))
    assert res.returncode == 1
    _no_raw(res.stdout)
    assert "scrubbed 1 of 2 files" in res.stdout
    assert visible(str(src / "broken[red]\x1b[31m\u202e.jpg")) in res.stdout
    quiet = run("scrub", str(src), "-o", str(tmp_path / "out2"), "-q")
    _no_raw(quiet.stderr)
    assert "broken[red]\\x1b[31m\\u202e.jpg" in quiet.stderr
    js = run("scrub", str(src), "-o", str(tmp_path / "out3"), "--json")
    _no_raw(js.stdout)
    inputs = {Path(f["input"]).name for f in json.loads(js.stdout)["files"]}
    assert inputs == {"good[bold].jpg", "broken[red]\x1b[31m\u202e.jpg"}


def test_on_a_terminal_styles_come_from_the_code_and_links_stay_whole(tmp_path: Path) -> None:
    (tmp_path / "clear\x1b[2J[bold].jpg").write_bytes(F.jpeg())
    (tmp_path / "v.png").write_bytes(hostile_png(HOSTILE_VALUES))
    code, out = run_tty("inspect", str(tmp_path), columns=60)
    assert code == 0, out
    assert "\x1b[1m" in out  # bold headings: a terminal gets styles
    assert "\x1b[2J" not in out and "\x1b]0;" not in out and "\u202e" not in out
    assert "clear\\x1b[2J[bold].jpg" in out
    assert LINK in out.splitlines(), out  # on a line of its own, whole, on a narrow terminal
    plain_code, plain = run_tty("inspect", str(tmp_path), columns=60, env={"NO_COLOR": "1"})
    assert plain_code == 0 and "\x1b" not in plain


def test_audit_list_and_show_print_log_values_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from auditkit import CLEAN, PHOTO, fill, transfer
    from veilpix import AuditLog, OutboundImage
    from veilpix.cli._main import main

    path = tmp_path / "audit.db"
    app = "[/]\u202e東京[@click=(]"
    with AuditLog(path) as log:
        (first,) = fill(log, 1, app=app, actor="[link=x]me", purpose="[bold]why")
        image = OutboundImage(PHOTO, CLEAN, "image", filename="a[bold]\x1b[31m.jpg")
        pending = log.begin(transfer(1, images=[image], app="[red]"))
        pending.finish(status=200)
    assert main(["audit", "list", "--log", str(path)]) == 0
    listed = capsys.readouterr().out
    _no_raw(listed)
    stored = json.loads(_json(capsys, "audit", "list", "--log", str(path)))
    for rec in stored:
        assert visible(rec["who"]["app"]) in listed
    assert "[red]" in listed and "[/]" in listed
    assert main(["audit", "show", "--log", str(path), first]) == 0
    shown = capsys.readouterr().out
    _no_raw(shown)
    assert "[link=x]me" in shown and "[bold]why" in shown and "\\u202e" in shown
    assert main(["audit", "show", "--log", str(path), pending.id]) == 0
    shown = capsys.readouterr().out
    _no_raw(shown)
    assert "a[bold]" in shown
    raw_json = _json(capsys, "audit", "show", "--log", str(path), first)
    _no_raw(raw_json)
    assert json.loads(raw_json)["who"]["app"] == stored[-1]["who"]["app"]


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    from veilpix.cli._main import main

    assert main([*argv, "--json"]) == 0
    return capsys.readouterr().out


def test_error_messages_quote_paths_as_written(tmp_path: Path) -> None:
    res = run("scrub", str(tmp_path / "gone\x1b[2J[bold]"), "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    _no_raw(res.stderr)
    assert "no such file or folder: " in res.stderr and "gone\\x1b[2J[bold]" in res.stderr
