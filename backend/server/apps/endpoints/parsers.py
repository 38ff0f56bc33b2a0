"""The JSON (and forms) every API route reads: bounded in depth, storable in any database.

Python's json module accepts documents that a database or a model cannot take: strings with NUL
(PostgreSQL refuses it in text and jsonb) or lone surrogates (no UTF-8 encoding exists for
them), numbers that overflow to infinity (``1e999``) or beyond what a float holds (a 400-digit
integer), and nesting deep enough to exhaust the recursion limit. Each of these used to reach
the database or the model and come back as a 500. ``SafeJSONParser`` refuses them while parsing,
with a 400 that names where in the body the value is (``metrics.note``, ``[3].age``); the form
parsers apply the same rules to every form field. Malformed JSON is a ``parse_error``; well-formed
JSON with such a value is ``invalid``. The body's size is bounded before any parser reads it
(middleware.py). Serializers check the rest.
"""
from __future__ import annotations

import json
import math
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser, get_encoding

# Deeper than any body this API takes (a batch of rows is two levels); deeper is an attack.
MAX_DEPTH = 32
LARGEST_FLOAT = 1.7976931348623157e308


class UnsafeJSON(ValueError):
    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path or 'the body'}: {problem}")


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain a lone surrogate (\\ud800-\\udfff)"
    return None


TOO_LARGE = "number too large (beyond a 64-bit float)"


def _scalar_problem(value: Any) -> str | None:
    kind = type(value)  # exact types: json makes nothing else (and bool is not an int here)
    if kind is str:
        problem = _string_problem(value)
        return f"text {problem}" if problem else None
    if kind is float:
        return None if math.isfinite(value) else TOO_LARGE
    if kind is int:
        return TOO_LARGE if abs(value) > LARGEST_FLOAT else None
    return None


def _find(value: Any, depth: int) -> tuple[list, str] | None:
    """The path (keys and indices) to the first value inside ``value`` that cannot be stored or
    computed, and what is wrong with it; None when every value is fine.

    Written for the common case, a list of flat objects: scalars are checked in the loop, and a
    path is only built on the way back from a problem.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        problem = _scalar_problem(value)
        return ([], problem) if problem else None
    if depth >= MAX_DEPTH:
        return [], f"nested deeper than {MAX_DEPTH} levels"
    items = value.items() if kind is dict else enumerate(value)
    for key, item in items:
        if kind is dict and (problem := _string_problem(key)):
            return [], f"a key {problem}"
        if type(item) is dict or type(item) is list:
            found = _find(item, depth + 1)
        else:
            problem = _scalar_problem(item)
            found = ([], problem) if problem else None
        if found:
            found[0].insert(0, key)
            return found
    return None


def check(value: Any) -> None:
    """Raise UnsafeJSON for the first value in ``value`` that cannot be stored or computed."""
    found = _find(value, 0)
    if found:
        parts, problem = found
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
        raise UnsafeJSON(path.lstrip("."), problem)


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})  # refuses non-text codecs (bombs)
        raw = stream.read() if stream is not None else b""  # bounded by BodyLimitMiddleware
        try:
            text = raw.decode(encoding)
        except ValueError as exc:  # UnicodeDecodeError
            raise ParseError(f"JSON parse error - {exc}") from None
        return parse_json(text)


def parse_json(text: str):
    """JSON text, parsed and held to the rules of every JSON body (or a ParseError): a body's,
    or a form field's that holds JSON."""
    try:
        data = json.loads(text, parse_constant=json_constant)
    except RecursionError:
        raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels",
                         code="invalid") from None
    except ValueError as exc:
        raise ParseError(f"JSON parse error - {exc}") from None
    return checked(data)


def parse_json_object(text: str, what: str):
    """A form field's JSON text that must hold an object (the upload's or the admin's metrics):
    parsed and checked as a JSON body is; a ParseError saying what is wrong otherwise."""
    value = parse_json(text)
    if not isinstance(value, dict):
        raise ParseError(f"give {what} as a JSON object", code="invalid")
    return value


class SafeFormParser(FormParser):
    """Forms, for the browsable API's HTML forms: the same rules for every field."""

    def parse(self, stream, media_type=None, parser_context=None):
        return checked_form(super().parse(stream, media_type, parser_context))


class SafeMultiPartParser(MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        checked_form(parsed.data)
        return parsed


def checked(data):
    try:
        check(data)
    except UnsafeJSON as exc:
        raise ParseError(str(exc), code="invalid") from None
    return data


def checked_form(data):
    """A form's fields, each value checked as a JSON string would be."""
    checked({key: values[0] if len(values) == 1 else values
             for key, values in data.lists()})
    return data


def json_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
