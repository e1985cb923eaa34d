"""The compliance console: ``veilpix audit serve``, the transfer log in a browser.

Read-only unless started with ``--allow-changes``; on loopback unless started with
``--allow-remote`` and a configured user. Pages are rendered here (no front-end build, no
asset from the internet); every action that changes the log is confirmed, protected
against cross-site requests, and itself recorded in the log.

- :mod:`~veilpix.console._app`: the application (request -> response), sign-in and CSRF checks
- :mod:`~veilpix.console._http`: requests, responses and the threaded server
- :mod:`~veilpix.console._auth`: login links, sessions, CSRF tokens, passwords
- :mod:`~veilpix.console._index`: the transfers as columns, for filters, paging and totals
- :mod:`~veilpix.console._pages`: the route table and what the pages share; the pages:
  :mod:`~veilpix.console._overview`, :mod:`~veilpix.console._transfers`,
  :mod:`~veilpix.console._transfer`, :mod:`~veilpix.console._register_page`
- :mod:`~veilpix.console._lookup`: "Was this photo sent?"
- :mod:`~veilpix.console._actions`: erase, resolve, verify, export
- :mod:`~veilpix.console._serve`: what ``veilpix audit serve`` starts
"""

from __future__ import annotations

from veilpix.console._app import Console, Settings

__all__ = ["Console", "Settings"]
