"""The image finder: every image in an outbound body, whatever its shape, or a refusal.

The guard hands every request body to a :class:`Finder`. The finder takes the body apart
layer by layer, whatever its Content-Type says (or when it says nothing), and at each layer
looks for images in every encoding apps and SDKs really use:

* containers: multipart of every subtype (nested too, parts with a Content-Transfer-Encoding
  or a Content-Encoding), JSON, JSON Lines, JSON inside JSON strings, text, form values,
  zip and tar archives, gzip / zstd / bzip2 / xz streams;
* encodings: raw bytes (an image signature at any offset), standard and URL-safe base64 with
  or without padding or line breaks, ``data:`` URIs in any letter case and with parameters,
  percent-encoding, hex strings, JSON arrays of byte values (Node's ``Buffer``), and text
  whose characters are bytes (``"\\u00ff\\u00d8..."``).

Each image found goes to the ``clean`` callback (the guard's sanitizer) and the cleaned bytes
are put back in the same place, in the same encoding and container: base64 stays base64 of
the same alphabet, padding and line length; a zip member is replaced in a rebuilt zip; a
JSON Lines line stays one line. Where an image is found in a place the finder cannot rebuild
(an encrypted zip member, a TIFF or HEIF inside other bytes, JSON with escapes that do not
parse), it raises :class:`Refused` and nothing is sent. Non-image files that may carry
personal data (PDF, Office documents, audio, video) go to the ``document`` callback, which
records or refuses them.

Fail closed and bounded: every decoded layer is charged against one byte budget for the
whole request (decompression bombs stop there), nesting stops at :data:`MAX_LAYERS`, and no
error path returns the original bytes. Bodies with no trace of an image are recognised by a
few C-speed passes (``bytes.translate``, ``bytes.find``) and returned untouched.

The modules: ``_layers`` (the :class:`Finder` and its walk), ``_raw`` (raw images and their
extents), ``_archives`` (documents, compressed streams and archives), ``_runs`` (text runs:
base64, hex, percent-encoding, escapes), ``_git`` (git binary patches), ``_json`` (JSON
documents), ``_mime`` (multipart parts and neutral file names), ``_prefilter`` (the quick
no-image test), ``_signatures`` (the image-format tables) and ``_base`` (limits, callbacks,
:class:`Refused`). This package is their interface: the rest of veilpix imports from
``veilpix.finder`` only.
"""

from __future__ import annotations

from veilpix.finder._base import MAX_LAYERS, DocumentKind, Refused, Role
from veilpix.finder._json import dotted, fix_mime, whole_json
from veilpix.finder._layers import Finder
from veilpix.finder._mime import neutral_name_for
from veilpix.finder._raw import other_image
from veilpix.finder._signatures import IMAGE_SUFFIXES

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_LAYERS",
    "DocumentKind",
    "Finder",
    "Refused",
    "Role",
    "dotted",
    "fix_mime",
    "neutral_name_for",
    "other_image",
    "whole_json",
]
