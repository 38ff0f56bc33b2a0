"""Writes: every change to the registry goes through one of these functions.

Views, the admin and management commands call them; none of them writes models directly. Each
service is one transaction, and changes of status within an endpoint are serialized by locking the
endpoint's row, so two concurrent promotions cannot both succeed.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.endpoints import ab_statistics, artifacts, routing, selectors
# Aliased: "metrics" is also a model version's offline figures, a parameter below.
from apps.endpoints import metrics as monitoring
from apps.endpoints.exceptions import Conflict, InvalidInput, NotFound, TooLarge, Unavailable
from apps.endpoints.models import (
    ABTest, ABTestArm, Endpoint, MLModel, MLModelStatus, MLRequest, Policy, Status, Strategy,
)
from apps.ml import catalog, drift
from apps.ml.base import FORMATS, ONNX
from apps.ml.checksums import sha256_bytes
from apps.ml.income_classifier import uploaded
from apps.ml.income_classifier.uploaded import UploadedIncomeClassifier
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
                  event: dict | None = None, announce: bool = True) -> MLModelStatus:
    """Make ``status`` the model's one active status; the caller holds the endpoint lock.

    Taking production archives the endpoint's previous production model in the same transaction
    (as MLflow's transition with archive_existing_versions=True), and records the promotion for
    webhook subscribers (``event``: more of its data) unless ``announce`` is false (an A/B
    test's incumbent taking back the production it held: nothing was promoted).
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
    if status == Status.PRODUCTION and announce:  # told to subscribers if, and when, it commits
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
            f"artifact_path: {artifact_path!r} is not a file of the bundled folder; give its "
            f"path relative to the store, as the training manifest lists it",
            log_detail=str(exc),
        ) from None
    except artifacts.Missing as exc:
        raise InvalidInput(f"artifact_path: the bundled folder has no file {artifact_path!r}",
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
    training_profile: dict[str, Any] | None = None,
) -> MLModel:
    """Register a model version with its first status.

    ``code`` must name a class of the algorithm catalogue, and ``artifact_path`` a file inside
    the artifact store; without ``artifact_sha256`` the file's current checksum is recorded, and
    without ``artifact_format`` the file's extension says it (.onnx, .joblib). A
    ``training_profile`` (apps/ml/drift.py) is what the model's requests are compared with for
    drift; without one, the model's drift cannot be computed.
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
        training_profile=_profile_checked(training_profile) if training_profile else {},
    )
    return _mlmodel_save(mlmodel, status=status, created_by=created_by or owner)


def _mlmodel_save(mlmodel: MLModel, *, status: str, created_by: str) -> MLModel:
    """Save a new model version with its first status, in one transaction."""
    try:
        with transaction.atomic():
            mlmodel.save()
            mlmodel_status_set(mlmodel=mlmodel, status=status, created_by=created_by)
    except IntegrityError:
        if not MLModel.objects.filter(endpoint=mlmodel.endpoint, name=mlmodel.name,
                                      version=mlmodel.version).exists():
            raise  # not the one constraint a client can break
        raise _duplicate(mlmodel.endpoint, mlmodel.name, mlmodel.version) from None
    return mlmodel


def _duplicate(endpoint: Endpoint, name: str, version: str) -> Conflict:
    return Conflict(f"endpoint {endpoint.name!r} already has a model {name!r} version "
                    f"{version!r}")


def mlmodel_upload(
    *,
    endpoint: Endpoint,
    name: str,
    version: str,
    artifact: bytes,
    owner: str,
    description: str = "",
    metrics: dict[str, Any] | None = None,
    status: str = Status.TESTING,
    created_by: str = "",
) -> MLModel:
    """Register a model version trained outside the project, from its ONNX file's bytes.

    The file is checked before anything is kept: a self-contained ONNX model of the standard
    operator sets that takes the endpoint's 14 raw features and answers with its classes
    (apps/ml/income_classifier/uploaded.py); anything else is an InvalidInput saying why. The
    service computes the sha256 itself and stores the file in the artifact store under that
    checksum; every replica then fetches, verifies and caches it on first use.
    """
    mlmodel_upload_check(endpoint=endpoint, name=name, version=version, artifact=artifact)
    return mlmodel_upload_checked(endpoint=endpoint, name=name, version=version,
                                  artifact=artifact, owner=owner, description=description,
                                  metrics=metrics, status=status, created_by=created_by)


def mlmodel_upload_checked(*, endpoint: Endpoint, name: str, version: str, artifact: bytes,
                           owner: str, description: str = "",
                           metrics: dict[str, Any] | None = None, status: str = Status.TESTING,
                           created_by: str = "") -> MLModel:
    """``mlmodel_upload`` once ``mlmodel_upload_check`` has passed (the admin's form runs it
    to show problems beside the fields): the file stored and the version registered. A version
    registered meanwhile under the same name is still a Conflict (the database's constraint)."""
    checksum = sha256_bytes(artifact)
    expected = list(UploadedIncomeClassifier.classes)
    try:
        stored = artifacts.save_to_store(artifact, checksum, ONNX)
    except Exception as exc:  # noqa: BLE001 - whatever the storage backend raises
        raise Unavailable("the artifact store is unavailable; nothing was registered",
                          log_detail=f"saving {checksum} failed: {type(exc).__name__}: {exc}") \
            from None
    mlmodel = MLModel(
        endpoint=endpoint, name=name, version=version, code=UploadedIncomeClassifier.code(),
        owner=owner, description=description, artifact_source=artifacts.STORE,
        artifact_path=stored, artifact_sha256=checksum, artifact_format=ONNX,
        metrics=metrics or {}, classes=expected,
    )
    return _mlmodel_save(mlmodel, status=status, created_by=created_by or owner)


def mlmodel_upload_check(*, endpoint: Endpoint, name: str, version: str, artifact: bytes) -> None:
    """Everything ``mlmodel_upload`` checks before it keeps anything (the admin's form runs it
    to show the problems beside the fields): an InvalidInput, TooLarge or Conflict saying why."""
    if len(artifact) > settings.MAX_ARTIFACT_BYTES:
        raise TooLarge(f"artifact: the file has {len(artifact)} bytes; the most an upload may "
                       f"carry is {settings.MAX_ARTIFACT_BYTES} (MAX_ARTIFACT_BYTES)")
    served = {tuple(classes) for classes in
              MLModel.objects.filter(endpoint=endpoint).values_list("classes", flat=True)}
    expected = tuple(UploadedIncomeClassifier.classes)
    if served and served != {expected}:
        raise InvalidInput(f"endpoint {endpoint.name!r} answers with classes "
                           f"{sorted(set().union(*served))}; an uploaded model serves the income "
                           f"endpoint's {list(expected)}")
    if MLModel.objects.filter(endpoint=endpoint, name=name, version=version).exists():
        raise _duplicate(endpoint, name, version)
    try:
        uploaded.inspect(artifact)
        UploadedIncomeClassifier.load(artifact, ONNX)
    except uploaded.UnsupportedModel as exc:
        raise InvalidInput(f"artifact: {exc}") from None


def mlmodel_artifact_update(*, mlmodel: MLModel, artifact_path: str, artifact_sha256: str,
                            metrics: dict[str, Any], artifact_format: str | None = None,
                            training_profile: dict[str, Any] | None = None) -> MLModel:
    """Point a model version at its retrained (or newly compiled) artifact: register_models,
    after training again.

    The same checks as registration: a file of the store whose sha256 is the one given. A
    ``training_profile`` replaces the model's; without one the model keeps its own.
    """
    mlmodel.artifact_path, mlmodel.artifact_sha256 = _artifact_checked(artifact_path,
                                                                       artifact_sha256)
    mlmodel.artifact_format = _artifact_format(artifact_path, artifact_format)
    mlmodel.metrics = metrics
    if training_profile:
        mlmodel.training_profile = _profile_checked(training_profile)
    mlmodel.save(update_fields=["artifact_path", "artifact_sha256", "artifact_format",
                                "metrics", "training_profile"])
    return mlmodel


def _profile_checked(training_profile: Any) -> dict[str, Any]:
    """A training profile of the shape apps/ml/drift.py makes, else InvalidInput naming each
    fault: the model's page, /metrics and its drift route all read it."""
    problems = drift.profile_problems(training_profile)
    if problems:
        raise InvalidInput("training_profile: " + "; ".join(problems))
    return training_profile


def mlmodel_training_profile_set(*, mlmodel: MLModel,
                                 training_profile: dict[str, Any]) -> MLModel:
    """Record the feature distributions of a model's training data (register_models, when the
    manifest's differ from the model's: profiles came after some models were registered)."""
    mlmodel.training_profile = _profile_checked(training_profile)
    mlmodel.save(update_fields=["training_profile"])
    return mlmodel


def feedback_set(*, mlrequest: MLRequest, feedback: str) -> MLRequest:
    """Record the true label of a served request; it must be one of the model's classes.

    Feedback on a request a running A/B test routed may move that test: under Thompson sampling
    its arms' shares are recomputed, and an auto-stop test stops once its always-valid result
    is significant or its budget is spent. Both happen in the feedback's transaction, so a
    failure stores neither.
    """
    classes = mlrequest.mlmodel.classes
    if feedback not in classes:
        raise InvalidInput(
            f"feedback {feedback!r} is not a label of this model; expected one of: "
            + ", ".join(repr(c) for c in classes)
        )
    first = mlrequest.feedback is None
    mlrequest.feedback = feedback
    mlrequest.feedback_at = timezone.now()
    with transaction.atomic():
        stored = MLRequest.objects.filter(pk=mlrequest.pk).update(
            feedback=mlrequest.feedback, feedback_at=mlrequest.feedback_at)
        if not stored:  # pruned (prune_requests) between reading it and this write
            raise NotFound(f"no request with id {mlrequest.pk}")
        ab_test = mlrequest.ab_test  # select_related by the API's queryset
        if ab_test is not None and ab_test.ended_at is None and (
                ab_test.auto_stop or ab_test.strategy == Strategy.THOMPSON):
            _ab_test_feedback_arrived(ab_test.pk)
    if first:  # counters only go up: a request's feedback is counted when it first arrives
        model = mlrequest.mlmodel
        labels = (model.endpoint.name, model.name, model.version)
        monitoring.feedback.labels(*labels).inc()
        if feedback == mlrequest.response:
            monitoring.feedback_agreeing.labels(*labels).inc()
    return mlrequest


# Weights are relative shares; the cap keeps their sum a finite float.
MAX_WEIGHT = 1e6


def _test_definition_checked(mlmodels: list[MLModel], split: list[float] | None, *,
                             alpha: float, max_feedback: int | None, auto_stop: bool,
                             min_share: float) -> list[float]:
    """The split of a test of ``mlmodels``: InvalidInput naming what is wrong with it, the
    models or the test's other settings."""
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
    if not 0 < alpha < 0.5:
        raise InvalidInput(f"alpha: the significance level must be between 0 and 0.5 "
                           f"(exclusive), got {alpha}")
    if max_feedback is not None and not auto_stop:
        raise InvalidInput("max_feedback: a feedback budget applies to a test that stops by "
                           "itself; give auto_stop: true as well")
    if max_feedback is not None and max_feedback < 1:
        raise InvalidInput(f"max_feedback: give a positive number, got {max_feedback}")
    if not 0 < min_share * len(mlmodels) < 1:
        raise InvalidInput(
            f"min_share: each of {len(mlmodels)} models' least share must be above 0 and "
            f"together below 1 (below {1 / len(mlmodels):.3g} each), got {min_share}")
    split = [1.0] * len(mlmodels) if split is None else [float(w) for w in split]
    if len(split) != len(mlmodels):
        raise InvalidInput(
            f"split has {len(split)} weights for {len(mlmodels)} models; give one per model"
        )
    if not all(0 < w <= MAX_WEIGHT for w in split):
        raise InvalidInput(f"split: weights must be positive numbers up to {MAX_WEIGHT:g}, "
                           f"got {split}")
    if not all(w / sum(split) > 0 for w in split):  # a share that rounds to nothing
        raise InvalidInput(f"split: the weights are too far apart; every model needs a share "
                           f"of traffic, got {split}")
    return split


def ab_test_create(
    *, title: str, created_by: str, mlmodels: list[MLModel], split: list[float] | None = None,
    policy: str = Policy.BEST, alpha: float = ab_statistics.ALPHA, auto_stop: bool = False,
    max_feedback: int | None = None, strategy: str = Strategy.FIXED, min_share: float = 0.05,
) -> ABTest:
    """Start an A/B test: the models move to ``ab_testing`` in one transaction.

    ``split`` holds one positive weight per model (default: equal shares): the traffic split
    under the ``fixed`` strategy, and the split until feedback arrives under ``thompson``.
    ``policy`` says what the stop does with production (``best``, ``significant``, judged at
    ``alpha``); with ``auto_stop`` the test stops itself (see ``feedback_set``).
    """
    if policy not in Policy.values:
        raise InvalidInput(f"policy: {policy!r} is not a policy; expected one of: "
                           + ", ".join(Policy.values))
    if strategy not in Strategy.values:
        raise InvalidInput(f"strategy: {strategy!r} is not a strategy; expected one of: "
                           + ", ".join(Strategy.values))
    split = _test_definition_checked(mlmodels, split, alpha=alpha, max_feedback=max_feedback,
                                     auto_stop=auto_stop, min_share=min_share)
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
        ab_test = ABTest.objects.create(
            title=title, endpoint=endpoint, created_by=created_by, policy=policy, alpha=alpha,
            auto_stop=auto_stop, max_feedback=max_feedback, strategy=strategy,
            min_share=min_share)
        for mlmodel, weight in zip(mlmodels, split):
            ABTestArm.objects.create(
                ab_test=ab_test, mlmodel=mlmodel, weight=weight, share=weight / sum(split),
                was_production=current.get(mlmodel.pk) == Status.PRODUCTION,
            )
            _status_write(mlmodel=mlmodel, status=Status.AB_TESTING, created_by=created_by)
        webhooks.event_record(endpoint=endpoint, type=EventType.ABTEST_STARTED, data={
            "ab_test": {"id": ab_test.pk, "title": title},
            "models": [{**_described(m), "weight": w} for m, w in zip(mlmodels, split)],
            "policy": policy, "strategy": strategy, "auto_stop": auto_stop, "by": created_by})
    return ab_test


def _end_statuses(ab_test: ABTest, promote: int | None, stopped_by: str):
    """The stop's status changes: the model to ``promote`` goes to production and the incumbent,
    if it lost, is archived; with nothing to promote the incumbent (if it is in the test) takes
    production back. Every other model goes back to testing. Returns the production arm (None
    when the endpoint's production lies outside the test) and the changes in words."""
    arms = {arm.mlmodel_id: arm for arm in ab_test.arms.all()}  # prefetched with the lock
    incumbent = next((arm for arm in arms.values() if arm.was_production), None)
    winner = arms[promote] if promote is not None else incumbent
    if promote is None and MLModelStatus.objects.filter(
            endpoint_id=ab_test.endpoint_id, status=Status.PRODUCTION, active=True).exists():
        winner = None  # a model was put in production by hand during the test: it stays
    moves, archived = [], []
    for arm in arms.values():
        if arm is winner:
            continue
        status = Status.ARCHIVED if arm.was_production and winner is not None else \
            Status.TESTING
        _status_write(mlmodel=arm.mlmodel, status=status, created_by=stopped_by)
        moves.append(f"{arm.mlmodel} -> {status}")
        if status == Status.ARCHIVED:
            archived.append(_described(arm.mlmodel))
    if winner is None:
        return None, moves
    _status_write(mlmodel=winner.mlmodel, status=Status.PRODUCTION, created_by=stopped_by,
                  announce=not winner.was_production,
                  event={"ab_test": {"id": ab_test.pk, "title": ab_test.title},
                         "archived": archived})
    kept = " (kept)" if winner.was_production else ""
    return winner, [f"{winner.mlmodel} -> production{kept}", *moves]


def ab_test_stop(*, ab_test_id: int, stopped_by: str) -> ABTest:
    """End a test and apply its policy to production, all in one transaction.

    Under ``best`` the most accurate model goes to production; under ``significant`` only a
    model better than the incumbent at the test's alpha (always-valid p-value) does, and
    otherwise production stays as it was. An incumbent that lost is archived; the other models
    go back to testing. The test row is locked first, so concurrent stops (and auto-stops)
    change production exactly once: the later ones find the test ended and get a Conflict.
    """
    with transaction.atomic():
        try:
            # NO KEY UPDATE: predictions routed by the test insert rows that reference it (a
            # KEY SHARE lock, for the foreign key), and must not wait for a stop or feedback.
            ab_test = (ABTest.objects.select_for_update(no_key=True)
                       .prefetch_related("arms__mlmodel").get(pk=ab_test_id))
        except ABTest.DoesNotExist:
            raise NotFound(f"no A/B test with id {ab_test_id}") from None
        return _stop_locked(ab_test, stopped_by=stopped_by)


def _stop_locked(ab_test: ABTest, *, stopped_by: str, counts=None) -> ABTest:
    """``ab_test_stop`` once the test's row is locked (prefetched with its arms)."""
    if ab_test.ended_at is not None:
        raise Conflict(
            f"A/B test {ab_test.pk} was already stopped at {ab_test.ended_at.isoformat()}"
        )
    _lock_endpoint(ab_test.endpoint_id)
    counts = counts or selectors.ab_test_counts(ab_test)
    waiting = [f"{c.name} {c.version}" for c in counts if c.feedback == 0]
    if waiting:
        raise Conflict(
            f"A/B test {ab_test.pk} cannot be stopped yet: no feedback for "
            + ", ".join(waiting) + "; the test keeps running"
        )
    result = selectors.ab_test_live_results(ab_test, counts)
    decision = result["decision"]
    production, moves = _end_statuses(ab_test, decision["promote"], stopped_by)

    result["promoted"] = decision["promote"]
    result["production"] = production.mlmodel_id if production else None
    result["stopped_by"] = stopped_by
    ab_test.ended_at = timezone.now()
    ab_test.results = result
    ab_test.summary = (ab_statistics.summary_text(result) + "\nstatus changes: "
                       + "; ".join(moves))
    ab_test.save(update_fields=["ended_at", "results", "summary"])
    # "promoted": the model the policy chose (the incumbent, when it won under best); None
    # when production stays as it was for want of a significant winner.
    promoted = production.mlmodel if decision["promote"] is not None else None
    webhooks.event_record(endpoint=ab_test.endpoint, type=EventType.ABTEST_STOPPED, data={
        "ab_test": {"id": ab_test.pk, "title": ab_test.title},
        "promoted": _described(promoted) if promoted else None,
        "decision": decision["reason"], "status_changes": moves,
        "summary": ab_test.summary, "by": stopped_by})
    return ab_test


AUTO_STOPPER = "auto-stop"


def _ab_test_feedback_arrived(ab_test_id: int) -> None:
    """A running test's reaction to new feedback; called inside the feedback's transaction.

    The test's row is locked, so feedback arriving at once is judged one after the other, each
    seeing the feedback committed before it: exactly one of them stops an auto-stop test (the
    others find it ended). The cost, an aggregate over the test's requests, is paid on feedback,
    never on the predict path, which only reads the arms' shares.
    """
    ab_test = (ABTest.objects.select_for_update(no_key=True).prefetch_related("arms__mlmodel")
               .filter(pk=ab_test_id, ended_at__isnull=True).first())
    if ab_test is None:  # stopped meanwhile
        return
    counts = selectors.ab_test_counts(ab_test)
    if ab_test.strategy == Strategy.THOMPSON:
        shares = routing.thompson_shares([c.correct for c in counts],
                                         [c.feedback for c in counts],
                                         min_share=ab_test.min_share)
        for arm, share in zip(ab_test.arms.all(), shares):
            ABTestArm.objects.filter(pk=arm.pk).update(share=share)
    if ab_test.auto_stop:
        result = selectors.ab_test_live_results(ab_test, counts)
        reason = ab_statistics.auto_stop_reason(result, max_feedback=ab_test.max_feedback)
        if reason is not None:
            _stop_locked(ab_test, stopped_by=f"{AUTO_STOPPER} ({reason})", counts=counts)
