"""Reads: which model answers a request, and the querysets the API lists.

The predict path's queries (``model_for_status``, ``production_with_shadows``,
``ab_test_models``) run on every prediction.
Each is compiled once per process for each set of arguments and then run as the SQL it compiled
to: compiling the query cost the predict path about as much as running it (issue 9's profile),
and the SQL depends on nothing but the arguments (the data it reads is read fresh each time, so
a promotion is seen on the next request).
"""
from __future__ import annotations

from collections.abc import Callable

from django.db.models import (
    Count, Exists, F, FilteredRelation, OuterRef, Q, QuerySet, Subquery,
)
from django.db.models.functions import TruncDate

from apps.endpoints import ab_statistics
from apps.endpoints.ab_statistics import ArmCounts
from apps.endpoints.exceptions import Conflict, InvalidInput, NotFound
from apps.endpoints.models import (
    ABTest, ABTestArm, Endpoint, MLModel, MLModelStatus, MLRequest, ShadowPrediction, Status,
)
from apps.ml import drift


def _outcome_counts() -> dict:
    """Aggregates over requests: how many, how many with feedback, how many answered right.
    (Names that do not shadow fields: "feedback" is one.)"""
    return {"n_requests": Count("id"), "n_feedback": Count("feedback"),
            "n_correct": Count("id", filter=Q(feedback=F("response")))}


_COMPILED: dict[tuple, tuple] = {}


def _run_compiled(key: tuple, build: Callable[[], QuerySet]) -> list:
    """The rows of the queryset ``build()`` makes, compiled once per ``key`` in this process."""
    compiled = _COMPILED.get(key)
    if compiled is None:
        if len(_COMPILED) >= 512:  # clients choose names and versions: keep it bounded
            _COMPILED.clear()
        queryset = build()
        compiled = _COMPILED[key] = (queryset.model, *queryset.query.sql_with_params())
    model, sql, params = compiled
    return list(model.objects.raw(sql, params))


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


def _narrow(queryset, prefix: str, version: str | None, name: str | None):
    if version:
        queryset = queryset.filter(**{prefix + "version": version})
    if name:
        queryset = queryset.filter(**{prefix + "name": name})
    return queryset


def _none_found(endpoint_name: str, what: str):
    endpoint_get(name=endpoint_name)  # raises NotFound for an unknown endpoint
    return NotFound(f"no model of endpoint {endpoint_name!r} matches {what}")


def model_for_status(
    *, endpoint_name: str, status: str, version: str | None = None, name: str | None = None
) -> MLModel:
    """The one model of an endpoint holding an active ``status``: a single query when it exists.

    No match is a NotFound that says whether the endpoint or the model is missing; several matches
    is an InvalidInput asking the client to narrow the choice.
    """
    if status == Status.PRODUCTION:
        return model_for_production(endpoint_name=endpoint_name, version=version, name=name)
    candidates = _run_compiled(("status", endpoint_name, status, version, name), lambda: _narrow(
        MLModel.objects.filter(endpoint__name=endpoint_name, statuses__active=True,
                               statuses__status=status), "", version, name)[:10])
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise _none_found(endpoint_name, _describe(status, version, name))
    raise InvalidInput(
        f"ambiguous: {len(candidates)} models of endpoint {endpoint_name!r} match "
        f"{_describe(status, version, name)} ("
        + ", ".join(f"{m.name} {m.version}" for m in candidates)
        + "); add ?version= and/or ?name= to choose one"
    )


def model_for_production(
    *, endpoint_name: str, version: str | None = None, name: str | None = None
) -> MLModel:
    """The model serving production traffic, in one query.

    That is the endpoint's production model; while an A/B test runs with the former production
    model in it, that model (the incumbent) goes on answering production and default requests.
    """
    return production_with_shadows(endpoint_name=endpoint_name, version=version, name=name)[0]


def production_with_shadows(
    *, endpoint_name: str, version: str | None = None, name: str | None = None
) -> tuple[MLModel, list[MLModel]]:
    """The model serving production traffic (see ``model_for_production``) and the endpoint's
    shadow models, which score the same requests, in one query. ``version`` and ``name``
    narrow the choice of the serving model, not of the shadows.

    The query joins each model's active status (one at most) and asks for an incumbent arm only
    in its WHERE clause: planning it costs PostgreSQL a fraction of what the same question put
    as three EXISTS subqueries did (about 0.5 ms of every prediction, issue 11's measurement).
    The few rows it returns (production, an incumbent, the shadows) are sorted out here.
    """
    def build():
        incumbent = Exists(ABTestArm.objects.filter(mlmodel=OuterRef("pk"), was_production=True,
                                                    ab_test__ended_at__isnull=True))
        return (MLModel.objects.filter(endpoint__name=endpoint_name)
                .annotate(active_status=FilteredRelation("statuses",
                                                         condition=Q(statuses__active=True)),
                          role=F("active_status__status"))
                .alias(incumbent=incumbent)
                .filter(Q(role__in=[Status.PRODUCTION, Status.SHADOW]) | Q(incumbent=True)))

    found = _run_compiled(("production", endpoint_name), build)
    serving = sorted((m for m in found if m.role != Status.SHADOW
                      and (not version or m.version == version) and (not name or m.name == name)),
                     key=lambda m: (m.role != Status.PRODUCTION, m.pk))
    if not serving:
        raise _none_found(endpoint_name, _describe(Status.PRODUCTION, version, name))
    return serving[0], sorted((m for m in found if m.role == Status.SHADOW), key=lambda m: m.pk)


def ab_test_models(
    *, endpoint_name: str, version: str | None = None, name: str | None = None
) -> list[MLModel]:
    """The models of the endpoint's running A/B test, in the order of its arms, in one query;
    each carries its arm's current ``arm_share`` of traffic and ``arm_test_id``."""
    arms = _run_compiled(("ab_testing", endpoint_name, version, name), lambda: _narrow(
        MLModel.objects.filter(abtest_arms__ab_test__endpoint__name=endpoint_name,
                               abtest_arms__ab_test__ended_at__isnull=True)
        .annotate(arm_share=F("abtest_arms__share"), arm_test_id=F("abtest_arms__ab_test"),
                  arm_id=F("abtest_arms__id"))
        .order_by("arm_id"), "", version, name))
    if not arms:
        endpoint_get(name=endpoint_name)
        narrowed = f" with {_describe(Status.AB_TESTING, version, name)}" if version or name else ""
        raise NotFound(f"no A/B test is running on endpoint {endpoint_name!r}{narrowed}")
    return arms


def ab_test_list() -> QuerySet[ABTest]:
    return ABTest.objects.select_related("endpoint").prefetch_related("arms__mlmodel")


def ab_test_counts(ab_test: ABTest) -> list[ArmCounts]:
    """Per model of a test: requests it routed, those with feedback, those answered right.

    One aggregate query over the test's requests; rows are never loaded into Python.
    """
    rows = MLRequest.objects.filter(ab_test=ab_test).values("mlmodel_id").annotate(
        **_outcome_counts())
    by_model = {row["mlmodel_id"]: row for row in rows}
    empty = {"n_requests": 0, "n_feedback": 0, "n_correct": 0}
    return [
        ArmCounts(
            mlmodel=arm.mlmodel_id, name=arm.mlmodel.name, version=arm.mlmodel.version,
            weight=arm.weight, was_production=arm.was_production,
            **{k[2:]: by_model.get(arm.mlmodel_id, empty)[k] for k in empty},
        )
        for arm in ab_test.arms.all()
    ]


def serving_models() -> QuerySet[MLModel]:
    """Models that can be asked for predictions: every model with an active, non-archived status."""
    return mlmodel_list().filter(current_status__in=Status.serving())


def serving_models_with_role() -> list[tuple[MLModel, bool]]:
    """Each serving model, and whether it answers production traffic: the endpoint's
    production model, or the incumbent of a running A/B test (which answers the default URL)."""
    incumbent = ABTestArm.objects.filter(mlmodel=OuterRef("pk"), was_production=True,
                                         ab_test__ended_at__isnull=True)
    models = serving_models().annotate(incumbent=Exists(incumbent))
    return [(m, m.current_status == Status.PRODUCTION or m.incumbent) for m in models]


def mlmodel_list() -> QuerySet[MLModel]:
    active = MLModelStatus.objects.filter(mlmodel=OuterRef("pk"), active=True)
    return MLModel.objects.select_related("endpoint").annotate(
        current_status=Subquery(active.values("status")[:1])
    )


def mlrequest_list() -> QuerySet[MLRequest]:
    return MLRequest.objects.select_related("mlmodel__endpoint", "ab_test")


def ab_test_results(ab_test: ABTest) -> dict:
    """A test's figures: computed live while it runs, as frozen at stop afterwards (or, for a
    stopped test whose row holds none, as its requests give them now)."""
    if ab_test.ended_at is not None and "models" in (ab_test.results or {}):
        return ab_test.results
    return ab_test_live_results(ab_test)


def ab_test_live_results(ab_test: ABTest, counts: list[ArmCounts] | None = None) -> dict:
    """A test's figures now, and the decision its policy would take if it stopped now."""
    return ab_statistics.results(counts or ab_test_counts(ab_test), alpha=ab_test.alpha,
                                 policy=ab_test.policy)


def live_counts(mlmodel_ids: list[int]) -> dict[int, tuple[int, int, int]]:
    """Per model, over every request it served: (requests, with feedback, answered right)."""
    rows = (MLRequest.objects.filter(mlmodel__in=mlmodel_ids).values("mlmodel_id")
            .annotate(**_outcome_counts()))
    return {r["mlmodel_id"]: (r["n_requests"], r["n_feedback"], r["n_correct"]) for r in rows}


def feedback_outcomes(ab_test: ABTest) -> dict[int, list[tuple[float, bool]]]:
    """Per model of a test, each feedback in time order: (its time as a Unix timestamp,
    answered right?). A stopped test's are those it was decided on: feedback until the stop."""
    requests = MLRequest.objects.filter(feedback__isnull=False, ab_test=ab_test)
    if ab_test.ended_at is not None:
        requests = requests.filter(feedback_at__lte=ab_test.ended_at)
    outcomes: dict[int, list[tuple[float, bool]]] = {}
    for model_id, at, feedback, response in requests.order_by("feedback_at", "id").values_list(
            "mlmodel_id", "feedback_at", "feedback", "response"):
        outcomes.setdefault(model_id, []).append((at.timestamp(), feedback == response))
    return outcomes


def model_days(mlmodel: MLModel) -> list[dict]:
    """Per day (UTC) the model served: requests, those with feedback, those answered right."""
    return list(MLRequest.objects.filter(mlmodel=mlmodel)
                .annotate(day=TruncDate("created_at")).values("day")
                .annotate(**_outcome_counts()).order_by("day"))


def served_inputs(mlmodel: MLModel, *, last: int) -> list:
    """The input rows of the last ``last`` requests the model scored, newest first: those it
    answered and those it scored as a shadow. Only the input_data column is read.

    Each query is ordered by (created_at, id), newest first, so it walks its table's (mlmodel,
    created_at) index backwards and stops after ``last`` rows, however rarely the model serves;
    the id orders the rows of one batch, which share one time.
    """
    answered = (MLRequest.objects.filter(mlmodel=mlmodel).order_by("-created_at", "-id")
                .values_list("created_at", "input_data")[:last])
    shadowed = (ShadowPrediction.objects.filter(mlmodel=mlmodel).order_by("-created_at", "-id")
                .values_list("created_at", "mlrequest__input_data")[:last])
    newest = sorted([*answered, *shadowed], key=lambda row: row[0], reverse=True)[:last]
    return [input_data for _, input_data in newest]


def model_drift(mlmodel: MLModel, *, last: int) -> dict:
    """Each feature's PSI over the model's last ``last`` requests against its training data's
    profile (apps/ml/drift.py), and the features above the threshold.

    Conflict when the model has no profile to compare with, or one this service cannot read
    (profiles are checked when written; the admin can still edit one by hand).
    """
    if not mlmodel.training_profile:
        raise Conflict(f"model {mlmodel.pk} ({mlmodel}) has no training profile, so its requests "
                       f"have nothing to be compared with; register it from a training manifest "
                       f"that lists one (the training script writes it) or with a training_profile")
    rows = served_inputs(mlmodel, last=last)
    try:
        features = drift.psi(mlmodel.training_profile, rows)
    except drift.ProfileError as exc:
        raise Conflict(f"the training profile of model {mlmodel.pk} ({mlmodel}) cannot be read; "
                       f"register it again", log_detail=f"model {mlmodel.pk}: {exc}") from None
    return {"mlmodel": mlmodel.pk, "last": last, "requests": len(rows),
            "threshold": drift.THRESHOLD,
            "features": [{"feature": name, **figures} for name, figures in features.items()],
            "drifted": drift.drifted(features)}


def drift_watched_models() -> list[MLModel]:
    """The serving models (shadows included) that have a training profile: those /metrics
    reports drift for."""
    return [mlmodel for mlmodel in serving_models() if mlmodel.training_profile]


def endpoint_overview() -> list[dict]:
    """Each endpoint with its production model, that model's live figures and a running test."""
    endpoints = list(Endpoint.objects.all())
    running = {t.endpoint_id: t for t in ABTest.objects.filter(ended_at__isnull=True)}
    overview = []
    for endpoint in endpoints:
        try:
            production = model_for_production(endpoint_name=endpoint.name)
        except NotFound:
            production = None
        overview.append({"endpoint": endpoint, "production": production,
                         "running_test": running.get(endpoint.pk)})
    counts = live_counts([o["production"].pk for o in overview if o["production"]])
    for row in overview:
        if row["production"]:
            row["counts"] = counts.get(row["production"].pk, (0, 0, 0))
    return overview


def shadow_results(mlmodel: MLModel) -> dict:
    """A model's record as a shadow: its live accuracy on the requests it scored, and a paired
    comparison with the answers production gave to the same requests (McNemar's exact test on
    the requests where exactly one of the two was right). One aggregate query."""
    has_feedback = Q(mlrequest__feedback__isnull=False)
    shadow_right = Q(response=F("mlrequest__feedback"))
    served_right = Q(mlrequest__response=F("mlrequest__feedback"))
    counts = ShadowPrediction.objects.filter(mlmodel=mlmodel).aggregate(
        requests=Count("id"),
        feedback=Count("id", filter=has_feedback),
        correct=Count("id", filter=has_feedback & shadow_right),
        production_correct=Count("id", filter=has_feedback & served_right),
        only_shadow_right=Count("id", filter=has_feedback & shadow_right & ~served_right),
        only_production_right=Count("id", filter=has_feedback & served_right & ~shadow_right),
    )
    n = counts["feedback"]
    p_value = ab_statistics.mcnemar(counts["only_production_right"], counts["only_shadow_right"])
    return {
        "mlmodel": mlmodel.pk,
        **ab_statistics.accuracy(counts["requests"], n, counts["correct"]),
        "paired": {
            "method": "McNemar's exact test on the requests with feedback where exactly one of "
                      "the shadow and the production answer was right",
            "requests": n,
            "production_correct": counts["production_correct"],
            "production_accuracy": counts["production_correct"] / n if n else None,
            "difference": (counts["correct"] - counts["production_correct"]) / n if n else None,
            "only_shadow_right": counts["only_shadow_right"],
            "only_production_right": counts["only_production_right"],
            "p_value": p_value,
            "significant": p_value < ab_statistics.ALPHA,
        },
    }
