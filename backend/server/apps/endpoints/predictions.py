"""The predict path: choose the model, score the rows, store them, in that order and no other.

One request holds one row or a batch of rows. For a batch as for one row: one query chooses the
model (or a running A/B test's arms), each model scores its rows in one inference call, and one
INSERT stores every row's request; a row is answered only once it is stored, and nothing is
stored unless every row can be served (a bad row is a 400 naming each bad row and field).

Under ``ab_testing`` each row is routed as a single request would be: a client key keeps every
row of the request on one model; without one, each row is drawn by the test's current shares.

Requests production serves are also scored by the endpoint's shadow models, found by the same
query as the production model: one inference call per shadow, and their answers stored with
the requests, linked to them (in the same statement on PostgreSQL). The client waits for that
(a shadow costs its own model call and its rows) but never gets a shadow's answer, and never an
error because of a shadow.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from contextlib import nullcontext
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.endpoints import metrics, routing, selectors
from apps.endpoints.exceptions import InvalidInput, TooLarge, Unavailable
from apps.endpoints.models import MLModel, MLRequest, ShadowPrediction, Status
from apps.endpoints.registry import registry
from apps.ml.base import RowsError

log = logging.getLogger(__name__)


def _route(*, endpoint_name: str, n: int, status: str, version: str | None, name: str | None,
           user_key: str | None) -> tuple[list[tuple[MLModel, int | None]], list[MLModel]]:
    """The model (and A/B test) answering each of ``n`` rows, and the shadow models that score
    them too (production only)."""
    if status == Status.PRODUCTION:
        mlmodel, shadows = selectors.production_with_shadows(endpoint_name=endpoint_name,
                                                             version=version, name=name)
        return [(mlmodel, None)] * n, shadows
    if status != Status.AB_TESTING:
        mlmodel = selectors.model_for_status(endpoint_name=endpoint_name, status=status,
                                             version=version, name=name)
        return [(mlmodel, None)] * n, []
    arms = selectors.ab_test_models(endpoint_name=endpoint_name, version=version, name=name)
    shares = [arm.arm_share for arm in arms]
    test_id = arms[0].arm_test_id
    if user_key:
        return [(routing.choose_arm(arms, shares, test_id=test_id, key=user_key), test_id)] * n, []
    rng = random.Random()
    return [(routing.choose_arm(arms, shares, test_id=test_id, rng=rng), test_id)
            for _ in range(n)], []


def predictions_create(
    *,
    endpoint_name: str,
    rows: list[Any],
    status: str | None = None,
    version: str | None = None,
    name: str | None = None,
    user_key: str | None = None,
    batch: bool = True,
) -> list[MLRequest]:
    """Answer and record ``rows``, in their order. ``batch=False`` (one row sent as an object)
    names its problems without a row index."""
    if not rows:
        raise InvalidInput("an empty array: send one row (a JSON object) or an array of 1 to "
                           f"{settings.PREDICT_BATCH_MAX} rows")
    if len(rows) > settings.PREDICT_BATCH_MAX:
        raise TooLarge(f"a batch holds at most {settings.PREDICT_BATCH_MAX} rows "
                       f"(PREDICT_BATCH_MAX); this one has {len(rows)}")
    status = Status.parse(status, serving=True)
    routed, shadows = _route(endpoint_name=endpoint_name, n=len(rows), status=status,
                             version=version, name=name, user_key=user_key)
    by_model: dict[int, list[int]] = defaultdict(list)
    for index, (mlmodel, _) in enumerate(routed):
        by_model[mlmodel.pk].append(index)

    answers: list[dict | None] = [None] * len(rows)
    problems: dict[int, list[str]] = {}
    for indices in by_model.values():
        mlmodel = routed[indices[0]][0]
        try:
            scored = _score(mlmodel, [rows[i] for i in indices], endpoint_name)
        except RowsError as exc:
            problems.update({indices[i]: found for i, found in exc.by_row.items()})
            continue
        for index, answer in zip(indices, scored):
            answers[index] = answer
    if problems:
        if not batch:
            raise InvalidInput("; ".join(problems[0]))
        raise InvalidInput(str(RowsError(dict(sorted(problems.items())))))

    shadowed = [(shadow, scored) for shadow in shadows
                if (scored := _shadow_answers(shadow, rows, endpoint_name)) is not None]
    requests = [MLRequest(mlmodel=mlmodel, ab_test_id=ab_test_id, input_data=row,
                          full_response=answer, response=answer["label"])
                for (mlmodel, ab_test_id), row, answer in zip(routed, rows, answers)]
    stored, shadowed = _store(requests, shadowed)
    metrics.count_predictions(endpoint=endpoint_name, status=status, stored=stored)
    for shadow, _ in shadowed:
        metrics.shadow_predictions.labels(endpoint_name, shadow.name, shadow.version).inc(
            len(stored))
    return stored


def _score(mlmodel: MLModel, rows: list, endpoint_name: str) -> list[dict]:
    """``mlmodel``'s answers to ``rows``, in one inference call (RowsError names bad rows).

    A model that fails, or answers what the service cannot store (``check_answers``, in every
    algorithm's ``compute_predictions``), is unavailable (503) and nothing of the request is
    stored.
    """
    algorithm = registry.get(mlmodel)
    started = time.perf_counter()
    try:
        scored = algorithm.compute_predictions(rows)
    except RowsError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that fails or answers nonsense
        raise Unavailable(f"model {mlmodel.pk} ({mlmodel.name} {mlmodel.version}) could not "
                          f"answer", log_detail=f"{type(exc).__name__}: {exc}") from None
    metrics.model_seconds.labels(endpoint_name, mlmodel.name, mlmodel.version).observe(
        time.perf_counter() - started)
    return scored


def _shadow_answers(shadow: MLModel, rows: list, endpoint_name: str) -> list[dict] | None:
    """A shadow model's answers to rows production accepted, or None if it cannot give them.

    A shadow never costs the client its answer: a shadow that fails to load, refuses a row
    production accepted, or answers what ``_score`` refuses is logged (and counted) and
    skipped for this request.
    """
    try:
        return _score(shadow, rows, endpoint_name)
    except Exception as exc:  # noqa: BLE001 - whatever a shadow does, production answers
        log.warning("shadow model %s (id %s) could not score %d rows: %s", shadow, shadow.pk,
                    len(rows), getattr(exc, "log_detail", None) or exc)
        metrics.shadow_failures.labels(endpoint_name, shadow.name, shadow.version).inc()
        return None


# The rows travel as one JSON parameter that the database expands (jsonb_to_recordset,
# json_each), in one INSERT whatever their number. Django's bulk_create sends eight placeholders
# a row: on PostgreSQL building, quoting and parsing that statement took five times as long for
# 100 rows (issue 9's profile), and SQLite splits it into a statement per 142 rows.
_INSERT = {
    "postgresql": (
        "INSERT INTO {table} ({columns}) SELECT r.m, r.t, r.i, r.f, r.l, %s FROM ROWS FROM "
        "(jsonb_to_recordset(%s::jsonb) AS (m bigint, t bigint, i jsonb, f jsonb, l text)) "
        "WITH ORDINALITY AS r(m, t, i, f, l, n) ORDER BY r.n RETURNING id"
    ),
    "sqlite": (
        "INSERT INTO {table} ({columns}) SELECT json_extract(value, '$.m'), "
        "json_extract(value, '$.t'), json_extract(value, '$.i'), json_extract(value, '$.f'), "
        "json_extract(value, '$.l'), %s FROM json_each(%s) ORDER BY CAST(key AS INTEGER) "
        "RETURNING id"
    ),
}
INSERT_COLUMNS = ("mlmodel_id", "ab_test_id", "input_data", "full_response", "response",
                  "created_at")


# On PostgreSQL the shadow answers ride in the same statement (a data-modifying CTE numbers the
# new requests in their order and joins the answers to them): a shadow adds no round trip and
# no transaction to the request. SQLite, in-process, takes a second INSERT in a transaction.
_SHADOWS_CTE = (
    "WITH r AS ({requests}), n AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM r), "
    "s AS (INSERT INTO {table} (mlrequest_id, mlmodel_id, full_response, response, created_at) "
    "SELECT n.id, s.m, s.f, s.l, %s FROM jsonb_to_recordset(%s::jsonb) "
    "AS s(n bigint, m bigint, f jsonb, l text) JOIN n USING (n)) "
    "SELECT id FROM n"
)
_INSERT_SHADOWS_SQLITE = (
    "INSERT INTO {table} (mlrequest_id, mlmodel_id, full_response, response, created_at) "
    "SELECT json_extract(value, '$.n'), json_extract(value, '$.m'), "
    "json_extract(value, '$.f'), json_extract(value, '$.l'), %s FROM json_each(%s)"
)


def _store(requests: list[MLRequest], shadowed: list[tuple[MLModel, list[dict]]]):
    """Store the requests and the shadow answers to them; the stored requests, and the shadows
    whose answers were stored. A shadow never costs production its answer: if storing its
    answers fails, they are logged and dropped, and the requests stored alone."""
    if shadowed:
        # Inside a transaction (a test's), a savepoint lets the retry below still run; served
        # in autocommit, the one statement needs none.
        try:
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                return _insert(requests, shadowed), shadowed
        except DatabaseError as exc:
            log.warning("shadow answers not stored (%s); storing the requests alone", exc)
    return _insert(requests), []


def _insert(stored: list[MLRequest],
            shadowed: list[tuple[MLModel, list[dict]]] = ()) -> list[MLRequest]:
    """Store the requests, and any shadow answers to them, with one INSERT each (one statement
    on PostgreSQL); set the requests' ids and creation time."""
    vendor = connection.vendor
    if vendor not in _INSERT:  # a database this project does not run on: the ORM's own way
        with transaction.atomic():
            MLRequest.objects.bulk_create(stored)
            ShadowPrediction.objects.bulk_create([
                ShadowPrediction(mlrequest=request, mlmodel=shadow, full_response=answer,
                                 response=answer["label"])
                for shadow, answers in shadowed for request, answer in zip(stored, answers)])
        return stored
    when = timezone.now()
    now = connection.ops.adapt_datetimefield_value(when)
    requests_sql = _INSERT[vendor].format(table=MLRequest._meta.db_table,
                                          columns=", ".join(INSERT_COLUMNS))
    records = json.dumps([{"m": r.mlmodel_id, "t": r.ab_test_id, "i": r.input_data,
                           "f": r.full_response, "l": r.response} for r in stored])
    shadow_table = ShadowPrediction._meta.db_table

    def shadow_rows(key):  # each answer, tied to its request by ``key(row number)``
        return json.dumps([{"n": key(n), "m": shadow.pk, "f": answer, "l": answer["label"]}
                           for shadow, answers in shadowed
                           for n, answer in enumerate(answers, start=1)])

    with connection.cursor() as cursor:
        if shadowed and vendor == "postgresql":
            cursor.execute(_SHADOWS_CTE.format(requests=requests_sql, table=shadow_table),
                           [now, records, now, shadow_rows(lambda n: n)])
            ids = sorted(row[0] for row in cursor.fetchall())
        else:
            with transaction.atomic() if shadowed else nullcontext():
                cursor.execute(requests_sql, [now, records])
                ids = sorted(row[0] for row in cursor.fetchall())  # assigned in the rows' order
                if shadowed:
                    cursor.execute(_INSERT_SHADOWS_SQLITE.format(table=shadow_table),
                                   [now, shadow_rows(lambda n: ids[n - 1])])
    for mlrequest, pk in zip(stored, ids):
        mlrequest.pk, mlrequest.created_at = pk, when
        mlrequest._state.adding = False
    return stored


def prediction_create(*, endpoint_name: str, input_data: Any, **choice) -> MLRequest:
    """Answer and record one row; ``choice``: status, version, name, user_key."""
    return predictions_create(endpoint_name=endpoint_name, rows=[input_data], batch=False,
                              **choice)[0]
