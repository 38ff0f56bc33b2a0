"""What every request body must be before anything reads it: within its size limit, and, for a
form, in UTF-8.

Django's own ``DATA_UPLOAD_MAX_MEMORY_SIZE`` leaves out the file parts of a multipart body and
only applies when a form is parsed; this refuses any body whose declared length is over the limit
(``MAX_BODY_BYTES``) before anything reads it: a JSON 413 under /api/, a plain 413 elsewhere.
A WSGI request carries its length (gunicorn and nginx pass on no body without one). The routes
that take model files (``POST /api/v1/mlmodels/upload`` and the admin's upload) are held to
``MAX_ARTIFACT_BYTES`` instead.

A form (url-encoded or multipart) may name any charset Python has a codec for, and Django decodes
its fields with it: ``punycode`` or ``idna`` then fail in ways no parser expects (a 500, even on
the admin's login page, whose CSRF check reads the form). Browsers send forms in the page's
charset, UTF-8 here, so a form in another charset is refused: a JSON 400 under /api/ (as DRF
refuses a JSON body in a non-text charset), a plain 400 elsewhere.
"""
import codecs
from functools import cache

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse

from apps.endpoints.exceptions import InvalidInput, body_too_large, is_api, json_error

FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
UTF8 = ("utf-8", "ascii")  # ASCII is UTF-8's first 128 characters


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
        refused = too_large(request) or form_not_utf8(request)
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


def form_not_utf8(request):
    charset = request.content_params.get("charset") if request.content_type in FORMS else None
    if charset is None:
        return None
    try:
        known = codecs.lookup(charset).name in UTF8
    except (LookupError, ValueError):  # unknown, or with a NUL in it
        known = False
    if known:
        return None
    return InvalidInput(f"Unsupported charset {charset[:40]!r} in request Content-Type header: a "
                      f"form is read as UTF-8")
