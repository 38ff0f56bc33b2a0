"""The request body limit, enforced once for every route and every content type.

Django's own ``DATA_UPLOAD_MAX_MEMORY_SIZE`` leaves out the file parts of a multipart body and
only applies when a form is parsed; this refuses any body whose declared length is over the limit
(``MAX_BODY_BYTES``) before anything reads it: a JSON 413 under /api/, a plain 413 elsewhere.
A WSGI request carries its length (gunicorn and nginx pass on no body without one).
"""
from django.conf import settings
from django.http import HttpResponse

from apps.endpoints.exceptions import body_too_large, is_api, json_error


class BodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            refused = body_too_large(int(declared))
            if is_api(request):
                return json_error(refused)
            return HttpResponse(refused.detail, status=refused.status_code,
                                content_type="text/plain")
        return self.get_response(request)
