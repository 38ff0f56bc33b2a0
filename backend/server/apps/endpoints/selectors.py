"""Reads: which model answers a request, and the querysets the API lists."""
from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery

from apps.endpoints.exceptions import InvalidInput, NotFound
from apps.endpoints.models import Endpoint, MLModel, MLModelStatus, MLRequest, Status


def status_parse(value: str | None, *, default: str = Status.PRODUCTION) -> str:
    if value is None or value == "":
        return default
    if value not in Status.values:
        raise InvalidInput(
            f"unknown status {value!r}; expected one of: {', '.join(Status.values)}"
        )
    return value


def endpoint_get(*, name: str) -> Endpoint:
    try:
        return Endpoint.objects.get(name=name)
    except Endpoint.DoesNotExist:
        known = ", ".join(Endpoint.objects.values_list("name", flat=True)) or "none registered"
        raise NotFound(f"unknown endpoint {name!r} (known endpoints: {known})") from None


def _describe(status: str, version: str | None, name: str | None) -> str:
    parts = [f"status {status!r}"]
    if version:
        parts.append(f"version {version!r}")
    if name:
        parts.append(f"name {name!r}")
    return ", ".join(parts)


def model_for_status(
    *, endpoint_name: str, status: str, version: str | None = None, name: str | None = None
) -> MLModel:
    """The one model of an endpoint holding an active ``status``: a single query when it exists.

    No match is a NotFound that says whether the endpoint or the model is missing; several matches
    is an InvalidInput asking the client to narrow the choice.
    """
    models = MLModel.objects.filter(
        endpoint__name=endpoint_name, statuses__active=True, statuses__status=status
    )
    if version:
        models = models.filter(version=version)
    if name:
        models = models.filter(name=name)
    candidates = list(models[:10])
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        endpoint_get(name=endpoint_name)  # raises NotFound for an unknown endpoint
        raise NotFound(
            f"no model of endpoint {endpoint_name!r} matches {_describe(status, version, name)}"
        )
    raise InvalidInput(
        f"ambiguous: {len(candidates)} models of endpoint {endpoint_name!r} match "
        f"{_describe(status, version, name)} ("
        + ", ".join(f"{m.name} {m.version}" for m in candidates)
        + "); add ?version= and/or ?name= to choose one"
    )


def mlmodel_list() -> QuerySet[MLModel]:
    active = MLModelStatus.objects.filter(mlmodel=OuterRef("pk"), active=True)
    return MLModel.objects.select_related("endpoint").annotate(
        current_status=Subquery(active.values("status")[:1])
    )


def mlrequest_list() -> QuerySet[MLRequest]:
    return MLRequest.objects.select_related("mlmodel")
