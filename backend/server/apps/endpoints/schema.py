"""drf-spectacular hooks: the OpenAPI schema as clients see the API."""

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error under /api/ has this shape.",
    "properties": {
        "detail": {"type": "string", "description": "What is wrong, in the client's terms."},
        "code": {"type": "string", "description": "The kind of error: invalid, parse_error, "
                 "not_authenticated, not_found, conflict, too_large, throttled, unavailable..."},
        "reference": {"type": "string", "description": "When present: the log entry that "
                      "holds the details an operator needs."},
        "errors": {"type": "object", "additionalProperties": True,
                   "description": "A validation error's messages, per field."},
    },
    "required": ["detail", "code"],
}

# Which errors each kind of operation can answer with (401: a wrong or revoked token is refused
# on every route; 503: the database or a model is unavailable).
READ_ERRORS = {
    "400": "Bad input: a filter or query value that is not valid.",
    "401": "A token was sent and is not valid.",
    "404": "No such object, or no such page.",
    "503": "The database is unavailable.",
}
WRITE_ERRORS = {
    **READ_ERRORS,
    "401": "No credentials, or a token that is not valid.",
    "403": "Signed in, but not staff.",
    "409": "Conflicts with the registry's current state.",
    "413": "The request body is over the size limit.",
    "415": "The body is not JSON (or a form, in the browsable API).",
}
PREDICT_ERRORS = {
    **WRITE_ERRORS,
    "404": "Unknown endpoint, or no model in the asked status.",
    "429": "This client's predict budget (PREDICT_RATE) is spent; see Retry-After.",
    "503": "The model or the database is unavailable.",
}
PREDICT_ERRORS.pop("403")
PREDICT_ERRORS.pop("409")


def canonical_paths(result, generator, request, public):
    """List paths as clients call them, without the optional trailing slash."""
    result["paths"] = {path.rstrip("/") or "/": item for path, item in result["paths"].items()}
    return result


# Answered by gunicorn or nginx before the request reaches the app (a request line over 4 KB).
URI_TOO_LONG = {"description": "The URL is too long; answered by the server in front of the app."}


def open_reads(result, generator, request, public):
    """Reads and predict need no credentials (permissions.py): say so, as ``{}`` among the
    security requirements; drf-spectacular only knows DRF's own permission classes."""
    for path, item in result["paths"].items():
        for method, operation in item.items():
            if method == "get" or path.endswith("/predict"):
                security = operation.setdefault("security", [])
                if {} not in security:
                    security.append({})
    return result


def error_responses(result, generator, request, public):
    """Document the JSON error each operation can answer with, in one place."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, item in result["paths"].items():
        for method, operation in item.items():
            if path.endswith("/predict"):
                errors = PREDICT_ERRORS
            elif method == "get":
                errors = READ_ERRORS
            else:
                errors = WRITE_ERRORS
            responses = operation.setdefault("responses", {})
            for code, description in errors.items():
                responses.setdefault(code, {"description": description,
                                            "content": {"application/json": {"schema": ref}}})
            responses.setdefault("414", URI_TOO_LONG)
    return result


def batch_limits(result, generator, request, public):
    """A predict batch holds 1 to PREDICT_BATCH_MAX rows (drf-spectacular cannot say it)."""
    from django.conf import settings

    body = result.get("components", {}).get("schemas", {}).get("PredictBody", {})
    for shape in body.get("oneOf", []):
        if shape.get("type") == "array":
            shape.update(minItems=1, maxItems=settings.PREDICT_BATCH_MAX)
    return result
