"""The JSON every API route reads: bounded in size and depth, and storable in any database.

Python's json module accepts documents that a database or a model cannot take: strings with NUL
(PostgreSQL refuses it in text and jsonb) or lone surrogates (no UTF-8 encoding exists for
them), numbers that overflow to infinity (``1e999``) or beyond what a float holds (a 400-digit
integer), and nesting deep enough to exhaust the recursion limit. Each of these used to reach
the database or the model and come back as a 500. ``SafeJSONParser`` refuses them while parsing,
with a 400 that names where in the body the value is (``metrics.note``, ``[3].age``), and refuses
a body over ``MAX_BODY_BYTES`` with a 413 before reading it. Serializers check the rest.
"""
from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding

from apps.endpoints.exceptions import PayloadTooLarge

# Deeper than any body this API takes (a batch of rows is two levels); deeper is an attack.
MAX_DEPTH = 32
LARGEST_FLOAT = 1.7976931348623157e308


class UnsafeJSON(ValueError):
    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path or 'the body'}: {problem}")


def _string_problem(text: str) -> str | None:
    if text.isascii():
        return "must not contain NUL (\\u0000)" if "\x00" in text else None
    if "\x00" in text:
        return "must not contain NUL (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain a lone surrogate (\\ud800-\\udfff)"
    return None


def check(value: Any, path: str = "", depth: int = 0) -> None:
    """Raise UnsafeJSON for the first value under ``value`` that cannot be stored or computed."""
    if isinstance(value, str):
        problem = _string_problem(value)
        if problem:
            raise UnsafeJSON(path, f"text {problem}")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > LARGEST_FLOAT:
            raise UnsafeJSON(path, "number too large (beyond a 64-bit float)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise UnsafeJSON(path, "number too large (beyond a 64-bit float)")
    elif depth >= MAX_DEPTH:
        raise UnsafeJSON(path, f"nested deeper than {MAX_DEPTH} levels")
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            problem = _string_problem(key)
            if problem:
                raise UnsafeJSON(path, f"a key {problem}")
            check(item, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check(item, f"{path}[{index}]", depth + 1)


def max_body_bytes() -> int:
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        limit = max_body_bytes()
        request = parser_context.get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the request body is {int(declared)} bytes, over the limit "
                                  f"of {limit} bytes")
        encoding = get_encoding(parser_context)  # refuses non-text codecs (decompression bombs)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge()
        try:
            data = json.loads(raw.decode(encoding), parse_constant=json_constant)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels",
                             code="invalid") from None
        except ValueError as exc:  # includes UnicodeDecodeError
            raise ParseError(f"JSON parse error - {exc}") from None
        try:
            check(data)
        except UnsafeJSON as exc:
            raise ParseError(str(exc), code="invalid") from None
        return data


def json_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
