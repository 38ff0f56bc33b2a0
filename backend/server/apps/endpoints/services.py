"""Writes: every change to the registry goes through one of these functions.

Views, the admin and management commands call them; none of them writes models directly. Each
service is one transaction, and changes of status within an endpoint are serialized by locking the
endpoint's row, so two concurrent promotions cannot both succeed.
"""
from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.endpoints import ab_statistics, artifacts, selectors
# Aliased: "metrics" is also a model version's offline figures, a parameter below.
from apps.endpoints import metrics as monitoring
from apps.endpoints.exceptions import Conflict, InvalidInput, NotFound
from apps.endpoints.models import (
    ABTest, ABTestArm, Endpoint, MLModel, MLModelStatus, MLRequest, Status,
)
from apps.ml import catalog
from apps.ml.base import FORMATS
from apps.ml.checksums import sha256_bytes
from apps.webhooks import services as webhooks
from apps.webhooks.models import EventType


def endpoint_create(*, name: str, owner: str) -> Endpoint:
    try:
        with transaction.atomic():
            return Endpoint.objects.create(name=name, owner=owner)
    except IntegrityError:
        raise Conflict(f"an endpoint named {name!r} already exists") from None


def _lock_endpoint(endpoint_id: int) -> Endpoint:
    return Endpoint.objects.select_for_update().get(pk=endpoint_id)


def _status_write(*, mlmodel: MLModel, status: str, created_by: str,
                  event: dict | None = None) -> MLModelStatus:
    """Make ``status`` the model's one active status; the caller holds the endpoint lock.

    Taking production archives the endpoint's previous production model in the same transaction
    (as MLflow's transition with archive_existing_versions=True), and records the promotion for
    webhook subscribers (``event``: more of its data).
    """
    archived = []
    if status == Status.PRODUCTION:
        holders = MLModelStatus.objects.filter(
            endpoint_id=mlmodel.endpoint_id, status=Status.PRODUCTION, active=True
        ).exclude(mlmodel=mlmodel).select_related("mlmodel")
        for holder in holders:
            holder.active = False
            holder.save(update_fields=["active"])
            MLModelStatus.objects.create(
                mlmodel_id=holder.mlmodel_id, endpoint_id=mlmodel.endpoint_id,
                status=Status.ARCHIVED, active=True, created_by=created_by,
            )
            archived.append(_described(holder.mlmodel))
    MLModelStatus.objects.filter(mlmodel=mlmodel, active=True).update(active=False)
    written = MLModelStatus.objects.create(
        mlmodel=mlmodel, endpoint_id=mlmodel.endpoint_id, status=status, active=True,
        created_by=created_by,
    )
    if status == Status.PRODUCTION:  # told to subscribers if, and when, this commits
        event = event or {}
        webhooks.event_record(endpoint=mlmodel.endpoint, type=EventType.MODEL_PROMOTED, data={
            "model": _described(mlmodel), "archived": archived + event.get("archived", []),
            "ab_test": event.get("ab_test"), "by": created_by})
    return written


def _described(mlmodel: MLModel) -> dict:
    return {"id": mlmodel.pk, "name": mlmodel.name, "version": mlmodel.version}


def mlmodel_status_set(*, mlmodel: MLModel, status: str, created_by: str) -> MLModelStatus:
    """Give a model a new active status, deactivating its others, in one transaction.

    ``ab_testing`` is entered and left only by starting and stopping an A/B test.
    """
    status = Status.parse(status)
    if status == Status.AB_TESTING:
        raise InvalidInput(
            "a model enters 'ab_testing' by starting an A/B test (POST /api/v1/abtests), "
            "not by setting its status"
        )
    with transaction.atomic():
        _lock_endpoint(mlmodel.endpoint_id)
        current = MLModelStatus.objects.filter(mlmodel=mlmodel, active=True).first()
        if current is not None and current.status == Status.AB_TESTING:
            raise Conflict(
                f"{mlmodel} is under a running A/B test; stop the test to change its status"
            )
        if current is not None and current.status == status:
            return current
        return _status_write(mlmodel=mlmodel, status=status, created_by=created_by)


def _artifact_checked(artifact_path: str, artifact_sha256: str = "") -> tuple[str, str]:
    """The path a model records for an artifact (inside the store) and the file's sha256.

    The file must be in the store; a given ``artifact_sha256`` must be the file's own.
    """
    try:
        path, data = artifacts.read(artifact_path)
    except artifacts.OutsideStore as exc:
        raise InvalidInput(
            f"artifact_path: {artifact_path!r} is not a file of the artifact store; give its "
            f"path relative to the store, as the training manifest lists it",
            log_detail=str(exc),
        ) from None
    except artifacts.Missing as exc:
        raise InvalidInput(f"artifact_path: the artifact store has no file {artifact_path!r}",
                           log_detail=str(exc)) from None
    actual = sha256_bytes(data)
    if artifact_sha256 and artifact_sha256 != actual:
        raise InvalidInput(f"artifact_sha256: the file {artifact_path!r} does not have the "
                           f"sha256 given")
    return artifacts.relative(path), actual


def _artifact_format(artifact_path: str, given: str | None) -> str:
    """The artifact's format: as given, else as its name's extension says."""
    found = given or artifact_path.rpartition(".")[2]
    if found not in FORMATS:
        raise InvalidInput(f"artifact_format: give the artifact's format, one of "
                           f"{', '.join(FORMATS)}" + ("" if given else
                                                      " (its name does not end in one)"))
    return found


def mlmodel_create(
    *,
    endpoint: Endpoint,
    name: str,
    version: str,
    code: str,
    owner: str,
    artifact_path: str,
    artifact_sha256: str = "",
    artifact_format: str | None = None,
    description: str = "",
    metrics: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    status: str = Status.TESTING,
    created_by: str = "",
) -> MLModel:
    """Register a model version with its first status.

    ``code`` must name a class of the algorithm catalogue, and ``artifact_path`` a file inside
    the artifact store; without ``artifact_sha256`` the file's current checksum is recorded, and
    without ``artifact_format`` the file's extension says it (.onnx, .joblib).
    """
    try:
        algorithm_class = catalog.algorithm_class(code)
    except catalog.UnknownAlgorithm as exc:
        raise InvalidInput(f"code: {exc}") from None
    stored_path, checksum = _artifact_checked(artifact_path, artifact_sha256)
    mlmodel = MLModel(
        endpoint=endpoint, name=name, version=version, code=code, owner=owner,
        description=description, artifact_path=stored_path, artifact_sha256=checksum,
        artifact_format=_artifact_format(artifact_path, artifact_format), metrics=metrics or {},
        classes=classes or list(algorithm_class.classes),
    )
    try:
        with transaction.atomic():
            mlmodel.save()
            mlmodel_status_set(mlmodel=mlmodel, status=status, created_by=created_by or owner)
    except IntegrityError:
        raise Conflict(
            f"endpoint {endpoint.name!r} already has a model {name!r} version {version!r}"
        ) from None
    return mlmodel


def mlmodel_artifact_update(*, mlmodel: MLModel, artifact_path: str, artifact_sha256: str,
                            metrics: dict[str, Any],
                            artifact_format: str | None = None) -> MLModel:
    """Point a model version at its retrained (or newly compiled) artifact: register_models,
    after training again.

    The same checks as registration: a file of the store whose sha256 is the one given.
    """
    mlmodel.artifact_path, mlmodel.artifact_sha256 = _artifact_checked(artifact_path,
                                                                       artifact_sha256)
    mlmodel.artifact_format = _artifact_format(artifact_path, artifact_format)
    mlmodel.metrics = metrics
    mlmodel.save(update_fields=["artifact_path", "artifact_sha256", "artifact_format",
                                "metrics"])
    return mlmodel


def feedback_set(*, mlrequest: MLRequest, feedback: str) -> MLRequest:
    """Record the true label of a served request; it must be one of the model's classes."""
    classes = mlrequest.mlmodel.classes
    if feedback not in classes:
        raise InvalidInput(
            f"feedback {feedback!r} is not a label of this model; expected one of: "
            + ", ".join(repr(c) for c in classes)
        )
    first = mlrequest.feedback is None
    mlrequest.feedback = feedback
    mlrequest.feedback_at = timezone.now()
    mlrequest.save(update_fields=["feedback", "feedback_at"])
    if first:  # counters only go up: a request's feedback is counted when it first arrives
        model = mlrequest.mlmodel
        labels = (model.endpoint.name, model.name, model.version)
        monitoring.feedback.labels(*labels).inc()
        if feedback == mlrequest.response:
            monitoring.feedback_agreeing.labels(*labels).inc()
    return mlrequest


# Weights are relative shares; the cap keeps their sum a finite float.
MAX_WEIGHT = 1e6


def _test_definition_checked(mlmodels: list[MLModel], split: list[float] | None) -> list[float]:
    """The split of a test of ``mlmodels``: InvalidInput naming what is wrong with either."""
    if len(mlmodels) < 2:
        raise InvalidInput(f"an A/B test needs at least two models, got {len(mlmodels)}")
    ids = [m.pk for m in mlmodels]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"a model appears twice in the test: {ids}")
    endpoints = {m.endpoint_id for m in mlmodels}
    if len(endpoints) > 1:
        raise InvalidInput(
            "all models of a test must belong to one endpoint; got "
            + ", ".join(f"{m} (endpoint {m.endpoint.name!r})" for m in mlmodels)
        )
    split = [1.0] * len(mlmodels) if split is None else [float(w) for w in split]
    if len(split) != len(mlmodels):
        raise InvalidInput(
            f"split has {len(split)} weights for {len(mlmodels)} models; give one per model"
        )
    if not all(0 < w <= MAX_WEIGHT for w in split):
        raise InvalidInput(f"split: weights must be positive numbers up to {MAX_WEIGHT:g}, "
                           f"got {split}")
    return split


def ab_test_create(
    *, title: str, created_by: str, mlmodels: list[MLModel], split: list[float] | None = None
) -> ABTest:
    """Start an A/B test: the models move to ``ab_testing`` in one transaction.

    ``split`` holds one positive weight per model (default: equal shares).
    """
    split = _test_definition_checked(mlmodels, split)
    ids = [m.pk for m in mlmodels]
    with transaction.atomic():
        endpoint = _lock_endpoint(mlmodels[0].endpoint_id)
        running = ABTest.objects.filter(endpoint=endpoint, ended_at__isnull=True).first()
        current = dict(
            MLModelStatus.objects.filter(mlmodel__in=ids, active=True)
            .values_list("mlmodel_id", "status")
        )
        busy = [m for m in mlmodels if current.get(m.pk) == Status.AB_TESTING]
        if busy:
            raise Conflict(
                ", ".join(str(m) for m in busy)
                + f" already in running A/B test {running.pk if running else '?'}; stop it first"
            )
        if running is not None:
            raise Conflict(
                f"A/B test {running.pk} ({running.title!r}) is already running on endpoint "
                f"{endpoint.name!r}; stop it before starting another"
            )
        ab_test = ABTest.objects.create(title=title, endpoint=endpoint, created_by=created_by)
        for mlmodel, weight in zip(mlmodels, split):
            ABTestArm.objects.create(
                ab_test=ab_test, mlmodel=mlmodel, weight=weight,
                was_production=current.get(mlmodel.pk) == Status.PRODUCTION,
            )
            _status_write(mlmodel=mlmodel, status=Status.AB_TESTING, created_by=created_by)
        webhooks.event_record(endpoint=endpoint, type=EventType.ABTEST_STARTED, data={
            "ab_test": {"id": ab_test.pk, "title": title},
            "models": [{**_described(m), "weight": w} for m, w in zip(mlmodels, split)],
            "by": created_by})
    return ab_test


def _promote_leader(ab_test: ABTest, leader: int, stopped_by: str):
    """The stop's status changes: the leader to production, the incumbent (if it lost) to
    archived, the others back to testing. Returns the winning arm and the changes in words."""
    arms = {arm.mlmodel_id: arm for arm in ab_test.arms.all()}  # prefetched with the lock
    winner = arms[leader]
    moves, archived = [], []
    for arm in arms.values():
        if arm is winner:
            continue
        status = Status.ARCHIVED if arm.was_production else Status.TESTING
        _status_write(mlmodel=arm.mlmodel, status=status, created_by=stopped_by)
        moves.append(f"{arm.mlmodel} -> {status}")
        if status == Status.ARCHIVED:
            archived.append(_described(arm.mlmodel))
    _status_write(mlmodel=winner.mlmodel, status=Status.PRODUCTION, created_by=stopped_by,
                  event={"ab_test": {"id": ab_test.pk, "title": ab_test.title},
                         "archived": archived})
    return winner, [f"{winner.mlmodel} -> production", *moves]


def ab_test_stop(*, ab_test_id: int, stopped_by: str) -> ABTest:
    """End a test and promote its most accurate model, all in one transaction.

    The winner goes to production; the incumbent, if it lost, is archived; the other models go
    back to testing. The test row is locked first, so concurrent stops promote exactly once: the
    later ones find the test ended and get a Conflict.
    """
    with transaction.atomic():
        try:
            ab_test = (ABTest.objects.select_for_update()
                       .prefetch_related("arms__mlmodel").get(pk=ab_test_id))
        except ABTest.DoesNotExist:
            raise NotFound(f"no A/B test with id {ab_test_id}") from None
        if ab_test.ended_at is not None:
            raise Conflict(
                f"A/B test {ab_test.pk} was already stopped at {ab_test.ended_at.isoformat()}"
            )
        _lock_endpoint(ab_test.endpoint_id)
        counts = selectors.ab_test_counts(ab_test)
        waiting = [f"{c.name} {c.version}" for c in counts if c.feedback == 0]
        if waiting:
            raise Conflict(
                f"A/B test {ab_test.pk} cannot be stopped yet: no feedback for "
                + ", ".join(waiting) + "; the test keeps running"
            )
        result = ab_statistics.results(counts)
        winner, moves = _promote_leader(ab_test, result["leader"], stopped_by)

        result["promoted"] = winner.mlmodel_id
        result["stopped_by"] = stopped_by
        ab_test.ended_at = timezone.now()
        ab_test.results = result
        ab_test.summary = (
            ab_statistics.summary_text(result) + "\nstatus changes: " + "; ".join(moves)
        )
        ab_test.save(update_fields=["ended_at", "results", "summary"])
        webhooks.event_record(endpoint=ab_test.endpoint, type=EventType.ABTEST_STOPPED, data={
            "ab_test": {"id": ab_test.pk, "title": ab_test.title},
            "promoted": _described(winner.mlmodel), "status_changes": moves,
            "summary": ab_test.summary, "by": stopped_by})
    return ab_test
