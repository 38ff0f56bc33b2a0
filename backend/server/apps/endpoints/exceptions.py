"""Domain errors, and the one place that turns any error under /api/ into a JSON response.

Services raise these without knowing about HTTP. Each class carries its own ``status_code`` and
``default_code``, as DRF's ``APIException`` subclasses do, so a subclass maps itself and the
handler needs no table. Every error body has the same shape, ``{"detail", "code"}``.

What a client reads is said in the client's terms. Whatever names the machine (file paths,
checksums, hosts, driver and loader messages) goes to the log only, under a short ``reference``
that the response carries too, so an operator can find the details a client reports.
"""
from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class RegistryError(Exception):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "error"

    def __init__(self, detail: str, *, log_detail: str | None = None):
        """``detail`` is for the client; ``log_detail``, when given, for the log only."""
        self.detail = detail
        self.log_detail = log_detail
        super().__init__(detail)


class InvalidInput(RegistryError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"


class NotFound(RegistryError):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "not_found"


class Conflict(RegistryError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class TooLarge(RegistryError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


class Unavailable(RegistryError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"


def body_too_large(size: int | None = None, *, limit: int | None = None,
                   setting: str = "MAX_BODY_BYTES") -> TooLarge:
    """A body over its route's limit: ``MAX_BODY_BYTES``, or the limit (and the setting naming
    it) of a route that takes more."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE if limit is None else limit
    size = f" ({size} bytes)" if size else ""
    return TooLarge(f"the request body{size} is over the limit of {limit} bytes ({setting})")


def _logged(detail: str, code: str, http_status: int, log_detail: str, *, exc_info=None) -> dict:
    """The body of an error whose details only the log may hold, under a new reference."""
    reference = uuid.uuid4().hex[:12]
    level = logging.ERROR if http_status >= 500 else logging.WARNING
    logger.log(level, "[%s] %s %s: %s", reference, http_status, code, log_detail,
               exc_info=exc_info)
    return {"detail": f"{detail} (reference {reference})", "code": code, "reference": reference}


def error_body(exc: Exception) -> tuple[dict, int]:
    """The public body and status of an exception that is not DRF's own."""
    if isinstance(exc, RegistryError):
        if exc.log_detail is not None:
            return (_logged(exc.detail, exc.default_code, exc.status_code, exc.log_detail),
                    exc.status_code)
        return {"detail": exc.detail, "code": exc.default_code}, exc.status_code
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is down, restarting or unreachable: a client may retry; the driver's
        # message (host, port, user) is for the log.
        return _logged("the database is unavailable; try again shortly", "unavailable", 503,
                       f"{type(exc).__name__}: {exc}"), 503
    return _logged("internal error", "error", 500, f"{type(exc).__name__}: {exc}",
                   exc_info=exc), 500


SUSPICIOUS = {
    "TooManyFieldsSent": "the form has too many fields",
    "TooManyFilesSent": "the form has too many files",
    "DisallowedHost": "the Host header names a host this service does not answer to",
}


def as_api_exception(exc: Exception) -> Exception:
    """Django's own request errors as the errors a client should get."""
    if isinstance(exc, RequestDataTooBig):  # DATA_UPLOAD_MAX_MEMORY_SIZE, hit parsing a form
        return body_too_large()
    if isinstance(exc, SuspiciousOperation):
        # Django's messages name settings; the client is told what it sent that is refused.
        return InvalidInput(SUSPICIOUS.get(type(exc).__name__, "the request was refused"))
    if isinstance(exc, Http404):
        return exceptions.NotFound(*exc.args)
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    return exc


def _flatten(detail, prefix: str = "") -> list[str]:
    """DRF's nested validation messages as "field: message" lines."""
    if isinstance(detail, dict):
        return [line for key, value in detail.items()
                for line in _flatten(value, key if key == "non_field_errors" or not prefix
                                     else f"{prefix}.{key}")]
    if isinstance(detail, list):
        return [line for index, value in enumerate(detail)
                for line in _flatten(value, prefix if not isinstance(value, (dict, list))
                                     else f"{prefix}[{index}]")]
    label = "" if prefix in ("", "non_field_errors") else f"{prefix}: "
    return [f"{label}{detail}"]


def exception_handler(exc, context):
    """``REST_FRAMEWORK["EXCEPTION_HANDLER"]``: every error as ``{"detail", "code"}``, never an
    HTML page. DRF's own errors keep their status and headers (WWW-Authenticate, Retry-After);
    a validation error also lists its messages per field under ``errors``."""
    exc = as_api_exception(exc)
    if isinstance(exc, APIException):
        response = drf_exception_handler(exc, context)
        if isinstance(exc, ValidationError):
            response.data = {"detail": "; ".join(_flatten(exc.detail)), "code": "invalid",
                             "errors": exc.detail}
        else:
            codes = exc.get_codes()
            response.data = {"detail": str(exc.detail),
                             "code": codes if isinstance(codes, str) else exc.default_code}
    else:
        body, http_status = error_body(exc)
        response = Response(body, status=http_status)
    request = context.get("request")
    renderer = getattr(request, "accepted_renderer", None)
    if request is not None and not isinstance(renderer, (JSONRenderer, BrowsableAPIRenderer)):
        # A view whose own formats are others (the schema's YAML): errors are still JSON.
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
    return response


# For what happens outside a DRF view (an unknown URL, a failure in middleware).
# Under /api/ they answer JSON like the views; elsewhere (admin, docs) Django's own pages.

def is_api(request) -> bool:
    return request.path.startswith("/api/")


@csrf_exempt  # a POST to an unknown API path is a 404, not a CSRF failure page
def api_not_found(request, exception=None):
    if not request.path.endswith("/") and request.method in ("GET", "HEAD"):
        try:  # what APPEND_SLASH would do, which this catch-all route otherwise pre-empts
            if resolve(request.path + "/").func is not api_not_found:
                return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
        except Resolver404:
            pass
    return JsonResponse({"detail": f"no API route matches {request.path!r}; the routes are "
                                   f"listed at /api/v1/ and in /api/docs/",
                         "code": "not_found"}, status=404)


def json_error(exc: Exception) -> JsonResponse:
    """``error_body`` as a plain Django response, for answers given outside a DRF view."""
    body, http_status = error_body(exc)
    return JsonResponse(body, status=http_status)


def handler400(request, exception):
    if is_api(request):
        converted = as_api_exception(exception)
        return json_error(converted if isinstance(converted, RegistryError)
                          else InvalidInput("bad request"))
    from django.views.defaults import bad_request
    return bad_request(request, exception)


def handler500(request):
    if is_api(request):
        return JsonResponse(_logged("internal error", "error", 500, f"{request.method} "
                                    f"{request.path} failed outside a view"), status=500)
    from django.views.defaults import server_error
    return server_error(request)
