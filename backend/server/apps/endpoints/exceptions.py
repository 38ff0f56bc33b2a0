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
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class RegistryError(Exception):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "error"

    def __init__(self, detail: str, *, log_detail: str | None = None):
        """``detail`` is for the client; ``log_detail``, when given, for the log only."""
        self.detail = detail
        self.log_detail = log_detail
        super().__init__(detail)

    @property
    def code(self) -> str:
        return self.default_code


class InvalidInput(RegistryError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"


class NotFound(RegistryError):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "not_found"


class Conflict(RegistryError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class Unavailable(RegistryError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"

    def __init__(self, detail=None, code=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        super().__init__(detail or f"the request body is over the limit of {limit} bytes", code)


def new_reference() -> str:
    return uuid.uuid4().hex[:12]


def _logged(detail: str, code: str, http_status: int, log_detail: str, *, exc_info=None) -> dict:
    """The body of an error whose details only the log may hold."""
    reference = new_reference()
    logger.error("[%s] %s %s: %s", reference, http_status, code, log_detail, exc_info=exc_info)
    return {"detail": f"{detail} (reference {reference})", "code": code, "reference": reference}


def error_body(exc: Exception) -> tuple[dict, int]:
    """The public body and status of any exception: the one mapping from errors to HTTP."""
    if isinstance(exc, RegistryError):
        if exc.log_detail is not None:
            return _logged(exc.detail, exc.code, exc.status_code, exc.log_detail), exc.status_code
        return {"detail": exc.detail, "code": exc.code}, exc.status_code
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is down, restarting or unreachable: a client may retry; the driver's
        # message (host, port, user) is for the log.
        return _logged("the database is unavailable; try again shortly", "unavailable", 503,
                       f"{type(exc).__name__}: {exc}"), 503
    return _logged("internal error", "error", 500, f"{type(exc).__name__}: {exc}",
                   exc_info=exc), 500


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
    # Imported here: rest_framework.views reads the parser settings, and the parser imports this.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, RequestDataTooBig):  # Django's own limit (DATA_UPLOAD_MAX_MEMORY_SIZE)
        exc = PayloadTooLarge()
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, APIException):
        response = drf_exception_handler(exc, context)
        if isinstance(exc, ValidationError):
            response.data = {"detail": "; ".join(_flatten(exc.detail)), "code": "invalid",
                             "errors": exc.detail}
        else:
            codes = exc.get_codes()
            response.data = {"detail": str(exc.detail),
                             "code": codes if isinstance(codes, str) else exc.default_code}
        return response
    body, http_status = error_body(exc)
    return Response(body, status=http_status)


# For what happens outside a DRF view (an unknown URL, a failure in middleware).
# Under /api/ they answer JSON like the views; elsewhere (admin, docs) Django's own pages.

def _is_api(request) -> bool:
    return request.path.startswith("/api/")


@csrf_exempt  # a POST to an unknown API path is a 404, not a CSRF failure page
def api_not_found(request, exception=None):
    return JsonResponse({"detail": f"no API route matches {request.path!r}; the routes are "
                                   f"listed at /api/v1/ and in /api/docs/",
                         "code": "not_found"}, status=404)


def handler400(request, exception):
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            too_large = PayloadTooLarge()
            return JsonResponse({"detail": str(too_large.detail), "code": too_large.default_code},
                                status=too_large.status_code)
        return JsonResponse({"detail": "bad request", "code": "invalid"}, status=400)
    from django.views.defaults import bad_request
    return bad_request(request, exception)


def handler500(request):
    if _is_api(request):
        return JsonResponse(_logged("internal error", "error", 500, f"{request.method} "
                                    f"{request.path} failed outside a view"), status=500)
    from django.views.defaults import server_error
    return server_error(request)
