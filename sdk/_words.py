"""Small wording helpers shared by the reports, the previews and the CLI."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 file``, ``2 files``; ``words`` when the plural is not ``word + "s"``."""
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"
