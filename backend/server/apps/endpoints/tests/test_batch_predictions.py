"""Batch predictions: an array of rows in, an array of answers out, one INSERT, all or nothing."""
import json

import pytest

from apps.endpoints import predictions, services
from apps.endpoints.models import MLRequest
from apps.endpoints.serializers import PredictionSerializer

PREDICT = "/api/v1/classifier/predict"


def post(client, body, query=""):
    return client.post(PREDICT + query, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def rows(sample_row):
    """Five rows, the third a high earner."""
    rich = dict(sample_row, education="Doctorate", **{"education-num": 16, "capital-gain": 99999,
                                                      "occupation": "Prof-specialty", "age": 50})
    return [dict(sample_row, age=20 + i) for i in range(2)] + [rich] + \
        [dict(sample_row, age=40 + i) for i in range(2)]


def test_a_batch_is_answered_in_order_and_each_row_is_stored(anon, registered, rows):
    response = post(anon, rows)
    assert response.status_code == 200
    answers = response.json()
    assert [a["label"] for a in answers] == ["<=50K", "<=50K", ">50K", "<=50K", "<=50K"]
    stored = {r.pk: r for r in MLRequest.objects.all()}
    assert len(stored) == 5
    for row, answer in zip(rows, answers):
        assert stored[answer["request_id"]].input_data == row
        assert stored[answer["request_id"]].full_response["probability"] == answer["probability"]
    single = post(anon, rows[2]).json()
    assert single["probability"] == answers[2]["probability"]  # the same as one row alone


def test_each_answer_has_the_documented_fields(anon, registered, rows):
    documented = set(PredictionSerializer().fields)
    assert all(set(answer) == documented for answer in post(anon, rows).json())
    assert set(post(anon, rows[0]).json()) == documented


def test_a_batch_costs_one_query_and_one_insert(registered, rows, django_assert_num_queries):
    predictions.predictions_create(endpoint_name="classifier", rows=rows)  # loads the model
    with django_assert_num_queries(2):
        predictions.predictions_create(endpoint_name="classifier", rows=rows * 20)


def test_a_bad_row_names_each_bad_row_and_field_and_nothing_is_stored(anon, registered, rows):
    rows[1]["age"] = "old"
    del rows[3]["sex"]
    rows[4] = "not a row"
    response = post(anon, rows)
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "[1] 'age' must be a number, got str 'old'; [3] missing feature(s): sex; "
        "[4] a row must be a JSON object of the 14 Adult features, got str")
    assert MLRequest.objects.count() == 0


def test_an_empty_batch_is_a_400(anon, registered):
    response = post(anon, [])
    assert response.status_code == 400 and "an empty array" in response.json()["detail"]


def test_a_batch_over_the_limit_is_a_413_naming_it(anon, registered, rows, settings):
    settings.PREDICT_BATCH_MAX = 4
    response = post(anon, rows)
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert response.json()["detail"] == ("a batch holds at most 4 rows (PREDICT_BATCH_MAX); "
                                         "this one has 5")
    assert MLRequest.objects.count() == 0


@pytest.fixture
def ab_test(registered):
    return services.ab_test_create(title="t", created_by="ann", mlmodels=list(registered.values()))


def test_under_ab_testing_a_key_keeps_every_row_on_one_model(anon, ab_test, rows):
    for key in ("alice", "bob", "carol", "dave"):
        answers = post(anon, rows, f"?status=ab_testing&user_id={key}").json()
        assert len({a["model"]["id"] for a in answers}) == 1
        assert {a["ab_test"] for a in answers} == {ab_test.pk}
        single = post(anon, rows[0], f"?status=ab_testing&user_id={key}").json()
        assert single["model"] == answers[0]["model"]  # the same model as a single request


def test_under_ab_testing_without_a_key_rows_are_spread_and_counted(anon, ab_test, rows):
    answers = post(anon, rows * 40, "?status=ab_testing").json()
    served = [a["model"]["id"] for a in answers]
    assert len(set(served)) == 2
    assert 60 < served.count(served[0]) < 140  # 200 rows, equal weights
    counts = {c.mlmodel: c.requests for c in services.selectors.ab_test_counts(ab_test)}
    assert counts == {m: served.count(m) for m in set(served)}


def test_the_rate_limit_counts_rows(anon, registered, rows, settings):
    settings.PREDICT_RATE = "7/day"
    assert post(anon, rows).status_code == 200  # 5 rows
    assert post(anon, rows[:3]).status_code == 429  # 8 > 7: refused, and not counted
    assert post(anon, rows[:2]).status_code == 200  # 7
    assert post(anon, rows[:1]).status_code == 429
    assert MLRequest.objects.count() == 7


def test_a_batch_over_the_limit_is_a_413_at_the_default_rate_too(anon, registered, sample_row,
                                                                 settings):
    assert settings.PREDICT_BATCH_MAX == 1000 and settings.PREDICT_RATE == "1000/second"
    response = post(anon, [sample_row] * 1001)
    assert response.status_code == 413
    assert response.json()["detail"].startswith("a batch holds at most 1000 rows")


def test_a_batch_larger_than_the_whole_budget_is_a_413_not_a_429_forever(anon, registered,
                                                                        rows, settings):
    settings.PREDICT_RATE = "4/minute"
    response = post(anon, rows)
    assert response.status_code == 413 and "Retry-After" not in response
    assert response.json()["detail"] == ("a batch of 5 rows is more than this client may send "
                                         "in one period (PREDICT_RATE 4/minute); send smaller "
                                         "batches")
    assert post(anon, rows[:4]).status_code == 200  # and it was not counted


def test_refused_batches_are_still_rate_limited(anon, registered, settings):
    settings.PREDICT_RATE = "2/day"
    assert [post(anon, []).status_code for _ in range(3)] == [400, 400, 429]


def test_every_column_of_a_request_is_written_by_the_insert():
    """The predict path writes MLRequest rows with its own INSERT: a new column must be in it
    (or be the key, or may be left empty)."""
    for field in MLRequest._meta.concrete_fields:
        assert (field.column in predictions.INSERT_COLUMNS or field.primary_key
                or field.null), f"{field.column} is not written by predictions._insert"


def test_concurrent_batches_get_their_own_rows(transactional_db, rows):
    import threading

    from django.core.management import call_command
    from django.db import connection

    call_command("register_models", stdout=open("/dev/null", "w"))
    results, errors = {}, []

    def client(number):
        try:
            for batch in range(4):
                mine = [dict(row, fnlwgt=number * 1000 + batch * 100 + i)
                        for i, row in enumerate(rows * 6)]
                results[(number, batch)] = (mine, predictions.predictions_create(
                    endpoint_name="classifier", rows=mine))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = {r.pk: r.input_data for r in MLRequest.objects.all()}
    assert len(stored) == 4 * 4 * 30
    for mine, answered in results.values():
        assert [stored[r.pk] for r in answered] == mine
