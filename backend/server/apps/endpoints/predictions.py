"""The predict path: choose the model, score the rows, store them, in that order and no other.

One request holds one row or a batch of rows. For a batch as for one row: one query chooses the
model (or a running A/B test's arms), each model scores its rows in one inference call, and one
INSERT stores every row's request; a row is answered only once it is stored, and nothing is
stored unless every row can be served (a bad row is a 400 naming each bad row and field).

Under ``ab_testing`` each row is routed as a single request would be: a client key keeps every
row of the request on one model; without one, each row is drawn by the test's weights.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from django.conf import settings

from apps.endpoints import routing, selectors
from apps.endpoints.exceptions import InvalidInput, TooLarge
from apps.endpoints.models import MLModel, MLRequest, Status
from apps.endpoints.registry import registry
from apps.ml.base import RowsError


def _route(*, endpoint_name: str, n: int, status: str, version: str | None, name: str | None,
           user_key: str | None) -> list[tuple[MLModel, int | None]]:
    """The model (and A/B test) answering each of ``n`` rows."""
    if status != Status.AB_TESTING:
        mlmodel = selectors.model_for_status(endpoint_name=endpoint_name, status=status,
                                             version=version, name=name)
        return [(mlmodel, None)] * n
    arms = selectors.ab_test_arms(endpoint_name=endpoint_name, version=version, name=name)
    weights = [arm.weight for arm in arms]
    test_id = arms[0].ab_test_id
    if user_key:
        arm = routing.choose_arm(arms, weights, test_id=test_id, key=user_key)
        return [(arm.mlmodel, test_id)] * n
    rng = random.Random()
    return [(arm.mlmodel, test_id) for arm in
            (routing.choose_arm(arms, weights, test_id=test_id, rng=rng) for _ in range(n))]


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
    routed = _route(endpoint_name=endpoint_name, n=len(rows), status=Status.parse(
        status, serving=True), version=version, name=name, user_key=user_key)
    by_model: dict[int, list[int]] = defaultdict(list)
    for index, (mlmodel, _) in enumerate(routed):
        by_model[mlmodel.pk].append(index)

    answers: list[dict | None] = [None] * len(rows)
    problems: dict[int, list[str]] = {}
    for indices in by_model.values():
        algorithm = registry.get(routed[indices[0]][0])
        try:
            scored = algorithm.compute_predictions([rows[i] for i in indices])
        except RowsError as exc:
            problems.update({indices[i]: found for i, found in exc.by_row.items()})
            continue
        for index, answer in zip(indices, scored):
            answers[index] = answer
    if problems:
        if not batch:
            raise InvalidInput("; ".join(problems[0]))
        raise InvalidInput(str(RowsError(dict(sorted(problems.items())))))

    return MLRequest.objects.bulk_create([
        MLRequest(mlmodel=mlmodel, ab_test_id=ab_test_id, input_data=row, full_response=answer,
                  response=answer["label"])
        for (mlmodel, ab_test_id), row, answer in zip(routed, rows, answers)
    ])


def prediction_create(*, endpoint_name: str, input_data: Any, **choice) -> MLRequest:
    """Answer and record one row; ``choice``: status, version, name, user_key."""
    return predictions_create(endpoint_name=endpoint_name, rows=[input_data], batch=False,
                              **choice)[0]
