"""What every request must be before anything reads it: a body within its size limit, a form in
a charset that can read one, and, outside the API, a query string without NUL.

Django's own ``DATA_UPLOAD_MAX_MEMORY_SIZE`` leaves out the file parts of a multipart body and
only applies when a form is parsed; this refuses any body whose declared length is over the limit
(``MAX_BODY_BYTES``) before anything reads it: a JSON 413 under /api/, a plain 413 elsewhere.
A WSGI request carries its length (gunicorn and nginx pass on no body without one). The routes
that take model files (``POST /api/v1/mlmodels/upload`` and the admin's upload) are held to
``MAX_ARTIFACT_BYTES`` instead.

A form (url-encoded or multipart) may name any charset Python has a codec for, and Django decodes
its fields with it: ``punycode``, ``idna`` or ``utf-16`` then fail in ways no parser expects (a
500, even on the admin's login page, whose CSRF check reads the form). A form whose charset
cannot read ASCII as ASCII is refused: a JSON 400 under /api/ (as DRF refuses a JSON body in a
non-text charset), a plain 400 elsewhere. UTF-8, Latin-1 (Java's HttpClient default), the
Windows and ISO code pages and the like pass; a charset Python does not know is ignored, as
Django ignores it (the form is read as UTF-8).

Under /api/ a NUL in a query parameter is named by the filter that reads it; elsewhere (the
admin's lists, whatever they filter on) it would reach PostgreSQL, which refuses NUL in text,
so it is a 400 here.
"""
import codecs
from functools import cache, lru_cache

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse

from apps.endpoints.exceptions import InvalidInput, body_too_large, is_api, json_error

FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
# Every ASCII character but the backslash, then escapes that only *_escape codecs decode.
ASCII_PROBE = bytes(b for b in range(128) if b != 0x5C) + b"\\x41\\u0041"


@cache
def upload_paths() -> set[str]:
    """The routes that take model files: the API's upload and the admin's."""
    return {reverse("mlmodel-upload").rstrip("/"),
            reverse("admin:endpoints_mlmodel_add").rstrip("/")}


def limit_for(request) -> tuple[int, str]:
    """The largest body the request's route reads, and the setting that says so."""
    if request.method == "POST" and request.path.rstrip("/") in upload_paths():
        return settings.MAX_ARTIFACT_BYTES, "MAX_ARTIFACT_BYTES"
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "MAX_BODY_BYTES"


class BodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refused = too_large(request) or form_charset_refused(request) or query_has_nul(request)
        if refused is None:
            return self.get_response(request)
        if is_api(request):
            return json_error(refused)
        return HttpResponse(refused.detail, status=refused.status_code, content_type="text/plain")


def too_large(request):
    declared = request.META.get("CONTENT_LENGTH") or "0"
    limit, setting = limit_for(request)
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return body_too_large(int(declared), limit=limit, setting=setting)
    return None


def form_charset_refused(request):
    charset = request.content_params.get("charset") if request.content_type in FORMS else None
    if charset is None:
        return None
    try:
        name = codecs.lookup(charset).name
    except LookupError:  # unknown: Django reads the form as UTF-8
        return None
    if reads_forms(name):
        return None
    return InvalidInput(f"Unsupported charset {charset[:40]!r} in request Content-Type header: a "
                        f"form must be in UTF-8 or another charset that keeps ASCII as it is")


@lru_cache(maxsize=None)  # keyed by codec names, of which Python has a few hundred
def reads_forms(codec: str) -> bool:
    """Whether Django can decode a form's fields with this codec: a text codec that reads ASCII
    as ASCII and takes errors="replace" (which Django's multipart parser asks of it)."""
    try:
        "".encode(codec)  # a text codec: bz2_codec and the like are not
        return ASCII_PROBE.decode(codec, "replace") == ASCII_PROBE.decode("ascii")
    except (UnicodeError, LookupError):
        return False


def query_has_nul(request):
    if is_api(request) or "%00" not in request.META.get("QUERY_STRING", ""):
        return None
    return InvalidInput("the query holds a NUL character (%00)")
