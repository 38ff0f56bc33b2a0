"""The request body limit, enforced once for every route and every content type.

Django's own ``DATA_UPLOAD_MAX_MEMORY_SIZE`` leaves out the file parts of a multipart body and
only applies when a form is parsed; this refuses any body whose declared length is over the limit
(``MAX_BODY_BYTES``) before anything reads it: a JSON 413 under /api/, a plain 413 elsewhere.
A WSGI request carries its length (gunicorn and nginx pass on no body without one). The routes
that take model files (``POST /api/v1/mlmodels/upload`` and the admin's upload) are held to
``MAX_ARTIFACT_BYTES`` instead.
"""
from functools import cache

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse

from apps.endpoints.exceptions import body_too_large, is_api, json_error


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
        declared = request.META.get("CONTENT_LENGTH") or "0"
        limit, setting = limit_for(request)
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            refused = body_too_large(int(declared), limit=limit, setting=setting)
            if is_api(request):
                return json_error(refused)
            return HttpResponse(refused.detail, status=refused.status_code,
                                content_type="text/plain")
        return self.get_response(request)
