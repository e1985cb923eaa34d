"""The frame every console page shares, and the small HTML pieces its pages build with.

Every value that comes from the log, the config or a request is escaped with
:func:`~veilpix.audit._html.esc` before it reaches a page; functions here take plain text
unless their docstring says HTML. Pages carry no inline script or style (the console's
Content-Security-Policy forbids both): the look is ``/static/console.css``, the one script
``/static/console.js`` only adds dropping a photo onto the lookup form, which works
without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from veilpix.audit._html import esc

__all__ = [
    "NAV",
    "Frame",
    "attrs",
    "button_form",
    "field",
    "hidden",
    "link",
    "notice",
    "page",
    "select",
    "url",
]

NAV = (
    ("/", "Overview"),
    ("/transfers", "Transfers"),
    ("/lookup", "Was this photo sent?"),
    ("/register", "Register"),
    ("/actions", "Actions"),
)


@dataclass(frozen=True)
class Frame:
    """What the frame shows around a page: who is signed in, their CSRF token (for the
    sign-out form), whether the console may change the log, and the log's name."""

    user: str
    csrf: str
    changes: bool
    log_name: str
    version: str


def url(path: str, params: Mapping[str, object] | None = None) -> str:
    """``path`` with the non-empty ``params`` as its query (escape it for HTML yourself)."""
    if not params:
        return path
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def attrs(**values: object) -> str:
    """HTML attributes, escaped (``class_`` for class; True: present, None/False: absent)."""
    out = []
    for key, value in values.items():
        name = key.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(out)


def link(href: str, text: str, **extra: object) -> str:
    return f"<a{attrs(href=href, **extra)}>{esc(text)}</a>"


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden"{attrs(name=name, value=value)}>'


def field(label: str, control: str, hint: str = "") -> str:
    """A labelled form control (``control`` is HTML with an ``id`` the label names)."""
    ident = control.split('id="', 1)[1].split('"', 1)[0] if 'id="' in control else ""
    note = f'<small class="hint">{esc(hint)}</small>' if hint else ""
    return f'<div class="field"><label for="{esc(ident)}">{esc(label)}</label>{control}{note}</div>'


def select(name: str, options: Iterable[tuple[str, str]], current: str | None, *, any_: str) -> str:
    """A ``<select>`` of (value, label) with a first "any" option."""
    opts = [f'<option value="">{esc(any_)}</option>']
    for value, label in options:
        chosen = " selected" if current is not None and value == current else ""
        opts.append(f'<option value="{esc(value)}"{chosen}>{esc(label)}</option>')
    return f'<select id="f-{esc(name)}" name="{esc(name)}">{"".join(opts)}</select>'


def button_form(
    action: str,
    label: str,
    csrf: str,
    fields: Sequence[tuple[str, str]] = (),
    *,
    cls: str = "",
    disabled: str | None = None,
) -> str:
    """A POST form of one button (``disabled``: why it cannot be used, shown beside it)."""
    inputs = "".join(hidden(k, v) for k, v in (("csrf", csrf), *fields))
    why = f' <span class="why">{esc(disabled)}</span>' if disabled else ""
    button = f"<button{attrs(type='submit', class_=cls or None, disabled=bool(disabled))}>"
    return (
        f'<form method="post" class="inline" action="{esc(action)}">{inputs}{button}'
        f"{esc(label)}</button>{why}</form>"
    )


def notice(text_html: str, tone: str = "info") -> str:
    """A message box (``text_html`` is HTML); tone: info, ok, warn, bad."""
    role = ' role="alert"' if tone in ("warn", "bad") else ' role="status"'
    return f'<div class="notice {esc(tone)}"{role}>{text_html}</div>'


def page(
    title: str, body_html: str, frame: Frame | None, *, current: str = "", heading: bool = True
) -> str:
    """A whole page. ``frame`` None: the signed-out frame (login and errors); ``heading``
    False when the body brings its own ``<h1>``."""
    nav = ""
    who = ""
    if frame is not None:
        items = []
        for href, label in NAV:
            here = ' aria-current="page"' if href == current else ""
            items.append(f'<li><a href="{href}"{here}>{esc(label)}</a></li>')
        nav = f'<nav aria-label="Sections"><ul>{"".join(items)}</ul></nav>'
        mode = (
            '<span class="mode changes" title="actions that change the log are enabled">'
            "changes allowed</span>"
            if frame.changes
            else '<span class="mode readonly" title="started without --allow-changes">'
            "read-only</span>"
        )
        who = (
            f'<div class="who">{mode}<span class="user">{esc(frame.user)}</span>'
            + button_form("/logout", "Sign out", frame.csrf, cls="quiet")
            + "</div>"
        )
    log = f'<span class="log">{esc(frame.log_name)}</span>' if frame is not None else ""
    version = esc(frame.version) if frame is not None else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)} · veilpix console</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script>'
        "</head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header class="top"><div class="brand"><b>veilpix</b> compliance console {log}</div>'
        f"{who}{nav}</header>"
        f'<main id="main" tabindex="-1">{f"<h1>{esc(title)}</h1>" if heading else ""}'
        f"{body_html}</main>"
        f'<footer class="foot">veilpix {version} · times are UTC · this console shows facts '
        "and keyed fingerprints from the transfer log, never images, prompts or keys</footer>"
        "</body></html>\n"
    )
