"""Domain errors, and the one place that turns them into HTTP responses.

Services raise these without knowing about HTTP; ``exception_handler`` (wired in
``REST_FRAMEWORK["EXCEPTION_HANDLER"]``) maps each kind to its status code. Every error body has
the same shape: ``{"detail": "<what is wrong>", "code": "<kind>"}``.
"""
from django.db import IntegrityError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class RegistryError(Exception):
    code = "error"

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


class InvalidInput(RegistryError):
    code = "invalid"


class NotFound(RegistryError):
    code = "not_found"


class Conflict(RegistryError):
    code = "conflict"


class Unavailable(RegistryError):
    code = "unavailable"


STATUS_CODES = {
    InvalidInput: status.HTTP_400_BAD_REQUEST,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def exception_handler(exc, context):
    if isinstance(exc, RegistryError):
        return Response({"detail": exc.detail, "code": exc.code}, status=STATUS_CODES[type(exc)])
    if isinstance(exc, IntegrityError):
        # A constraint a concurrent writer won: the request conflicts with the registry's state.
        return Response(
            {"detail": f"conflicts with the registry's current state: {exc}", "code": "conflict"},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, OperationalError):
        return Response(
            {"detail": f"the database is unavailable: {exc}", "code": "unavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return drf_exception_handler(exc, context)
