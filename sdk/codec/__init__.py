"""The request codec: find the images in an outbound HTTP request body, and rebuild the body.

Before a request leaves, the core decodes its body (:func:`decode_body`), finds every image
in it (multipart parts, data URIs and bare base64 in JSON), sanitizes each one and rebuilds
the body with the same meaning (:func:`build_multipart`, :func:`replace_at`,
:func:`dump_json`). Everything here is a pure function: bytes in, bytes out, no I/O and no
global state.

Every reader is bounded and fails closed. Hostile input (a decompression bomb, 100 000
multipart parts, an unterminated body, a header block without end, JSON nested 100 000 deep)
raises a :class:`~veilpix.RequestError` quickly, with a message that says what is wrong;
nothing here hangs, recurses without bound or allocates much more than the limits the caller
passes. Where two readers (veilpix and the vendor's server) could see a body differently, the
body is refused rather than guessed at, so what veilpix checked is what the vendor gets.

Limits (keyword arguments; the defaults are the constants in ``_limits``):

* ``max_bytes``: body size, compressed and decoded (:data:`DEFAULT_MAX_BYTES`, 128 MiB)
* ``max_parts``: multipart parts (:data:`DEFAULT_MAX_PARTS`, 256)
* ``max_depth``: JSON nesting (:data:`DEFAULT_MAX_DEPTH`, 256)
* fixed: 4 stacked content codings, a 70-character boundary (RFC 2046), 16 KiB and 32 lines
  of headers per multipart part, 8 MiB zstd window (RFC 9659)

The modules, one seam each: ``_encoding`` (content codings), ``_params`` (header parameters,
RFC 2231), ``_multipart`` (multipart bodies), ``_datauri`` (base64 and data URIs), ``_json``
(JSON bodies and what they carry), ``_jsonpath`` (paths and the adapters' path language),
``_limits`` (the default limits). This package is their interface: the rest of veilpix
imports from ``veilpix.codec`` only.
"""

from __future__ import annotations

from veilpix.codec._datauri import (
    DataUri,
    build_data_uri,
    decode_base64,
    looks_like_base64_image,
    parse_data_uri,
)
from veilpix.codec._encoding import Coding, decode_body, encode_body, parse_content_encoding
from veilpix.codec._json import (
    JSON_DECODER,
    PROMPT_KEYS,
    SYSTEM_KEYS,
    SYSTEM_ROLES,
    TEXT_KEYS,
    JsonImage,
    JsonText,
    JsonUrl,
    dump_json,
    find_images_in_json,
    find_urls_in_json,
    image_in_string,
    iter_strings,
    load_json,
    scan_json,
)
from veilpix.codec._jsonpath import JsonPath, get_at, replace_at, select
from veilpix.codec._limits import (
    BASE64_MIN_LEN,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_PARTS,
)
from veilpix.codec._multipart import (
    Multipart,
    Part,
    build_multipart,
    check_boundary,
    multipart_boundary,
    parse_multipart,
    split_multipart,
)
from veilpix.codec._params import decode_rfc2231, parse_content_type, quote_param, split_params

__all__ = [  # noqa: RUF022 - plain sorted() order, which tests/codec/test_codec.py checks
    "BASE64_MIN_LEN",
    "Coding",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PARTS",
    "DataUri",
    "JSON_DECODER",
    "JsonImage",
    "JsonPath",
    "JsonText",
    "JsonUrl",
    "Multipart",
    "PROMPT_KEYS",
    "Part",
    "SYSTEM_KEYS",
    "SYSTEM_ROLES",
    "TEXT_KEYS",
    "build_data_uri",
    "build_multipart",
    "check_boundary",
    "decode_base64",
    "decode_body",
    "decode_rfc2231",
    "dump_json",
    "encode_body",
    "find_images_in_json",
    "find_urls_in_json",
    "get_at",
    "image_in_string",
    "iter_strings",
    "load_json",
    "looks_like_base64_image",
    "multipart_boundary",
    "parse_content_encoding",
    "parse_content_type",
    "parse_data_uri",
    "parse_multipart",
    "quote_param",
    "replace_at",
    "scan_json",
    "select",
    "split_multipart",
    "split_params",
]
