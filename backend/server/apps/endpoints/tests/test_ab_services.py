"""A/B tests through the services, on the real database: start, route, measure, stop."""
import threading

import pytest
from django.db import connection

from apps.endpoints import predictions, selectors, services
from apps.endpoints.exceptions import Conflict, InvalidInput, NotFound
from apps.endpoints.models import ABTest, Endpoint, MLModel, MLModelStatus, MLRequest


def status_of(mlmodel):
    return MLModelStatus.objects.get(mlmodel=mlmodel, active=True).status


@pytest.fixture
def models(registered):
    return registered["random forest"], registered["extra trees"]


@pytest.fixture
def ab_test(models):
    return services.ab_test_create(title="rf vs et", created_by="ann", mlmodels=list(models))


def record(ab_test, mlmodel, *, right, wrong=0, waiting=0):
    """Requests routed by the test: ``right`` answered correctly, ``wrong`` not, ``waiting``
    still without feedback."""
    rows = (
        [(">50K", ">50K")] * right + [(">50K", "<=50K")] * wrong + [(">50K", None)] * waiting
    )
    MLRequest.objects.bulk_create(
        MLRequest(mlmodel=mlmodel, ab_test=ab_test, input_data={}, full_response={},
                  response=response, feedback=feedback)
        for response, feedback in rows
    )


def test_starting_a_test_moves_its_models_to_ab_testing(ab_test, models):
    assert [status_of(m) for m in models] == ["ab_testing", "ab_testing"]
    arms = list(ab_test.arms.order_by("id"))
    assert [(a.mlmodel_id, a.weight, a.was_production) for a in arms] == [
        (models[0].pk, 1.0, True), (models[1].pk, 1.0, False)]


@pytest.mark.parametrize("make_args, error, fragment", [
    (lambda rf, et: {"mlmodels": [rf]}, InvalidInput, "at least two models, got 1"),
    (lambda rf, et: {"mlmodels": [rf, rf]}, InvalidInput, "appears twice"),
    (lambda rf, et: {"mlmodels": [rf, et], "split": [1]}, InvalidInput,
     "split has 1 weights for 2 models"),
    (lambda rf, et: {"mlmodels": [rf, et], "split": [1, 0]}, InvalidInput,
     "split: weights must be positive numbers up to 1e.06"),
])
def test_bad_test_definitions_are_refused_and_change_nothing(models, make_args, error, fragment):
    with pytest.raises(error, match=fragment):
        services.ab_test_create(title="t", created_by="ann", **make_args(*models))
    assert ABTest.objects.count() == 0
    assert [status_of(m) for m in models] == ["production", "testing"]


def test_models_of_different_endpoints_are_refused(models):
    other = Endpoint.objects.create(name="churn", owner="ann")
    stray = services.mlmodel_create(endpoint=other, name="x", version="1", code=models[0].code,
                                    owner="ann", artifact_path=models[0].artifact_path)
    with pytest.raises(InvalidInput, match="one endpoint; got .*'classifier'.*'churn'"):
        services.ab_test_create(title="t", created_by="ann", mlmodels=[models[0], stray])


def test_a_model_already_under_test_is_named(ab_test, models):
    third = services.mlmodel_create(endpoint=models[0].endpoint, name="random forest",
                                    version="0.0.2", code=models[0].code, owner="ann",
                                    artifact_path=models[0].artifact_path)
    with pytest.raises(Conflict, match=f"extra trees 0.0.1 already in running A/B test "
                                       f"{ab_test.pk}"):
        services.ab_test_create(title="t2", created_by="ann", mlmodels=[third, models[1]])


def test_a_second_test_on_a_running_endpoint_is_refused(ab_test, models):
    a = services.mlmodel_create(endpoint=models[0].endpoint, name="a", version="1",
                                code=models[0].code, owner="ann",
                                artifact_path=models[0].artifact_path)
    b = services.mlmodel_create(endpoint=models[0].endpoint, name="b", version="1",
                                code=models[0].code, owner="ann",
                                artifact_path=models[0].artifact_path)
    with pytest.raises(Conflict, match=f"A/B test {ab_test.pk} .* is already running"):
        services.ab_test_create(title="t2", created_by="ann", mlmodels=[a, b])


def test_a_model_under_test_cannot_change_status_by_hand(ab_test, models):
    with pytest.raises(Conflict, match="under a running A/B test"):
        services.mlmodel_status_set(mlmodel=models[1], status="staging", created_by="ann")


def test_ab_testing_requests_are_routed_and_recorded_with_their_test(ab_test, sample_row):
    served = [predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                            status="ab_testing", user_key=f"u{i}")
              for i in range(20)]
    assert {r.ab_test_id for r in served} == {ab_test.pk}
    assert len({r.mlmodel_id for r in served}) == 2


def test_a_user_key_sticks_to_one_model(ab_test, sample_row):
    served = {predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                            status="ab_testing", user_key="alice").mlmodel_id
              for _ in range(10)}
    assert len(served) == 1


def test_routing_under_ab_testing_costs_one_query_and_one_insert(ab_test, sample_row,
                                                                 django_assert_num_queries):
    for _ in range(4):  # load both models first
        predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                      status="ab_testing")
    with django_assert_num_queries(2):
        predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                      status="ab_testing")


def test_the_default_url_keeps_the_incumbent_while_it_is_under_test(ab_test, models,
                                                                    sample_row,
                                                                    django_assert_num_queries):
    predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    with django_assert_num_queries(2):
        mlrequest = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    assert mlrequest.mlmodel == models[0] and mlrequest.ab_test_id is None
    explicit = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                             status="production")
    assert explicit.mlmodel == models[0]


def test_ab_testing_without_a_running_test_is_a_404(registered, sample_row):
    with pytest.raises(NotFound, match="no A/B test is running on endpoint 'classifier'"):
        predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                      status="ab_testing")


def test_live_counts_come_from_one_aggregate_query(ab_test, models, django_assert_num_queries):
    record(ab_test, models[0], right=3, wrong=1, waiting=2)
    record(ab_test, models[1], right=1, wrong=1)
    record(None, models[0], right=5)  # outside the test: not counted
    ab_test = selectors.ab_test_list().get(pk=ab_test.pk)
    with django_assert_num_queries(1):
        counts = selectors.ab_test_counts(ab_test)
    assert [(c.requests, c.feedback, c.correct) for c in counts] == [(6, 4, 3), (2, 2, 1)]


def test_stopping_without_feedback_for_a_model_is_a_conflict_and_the_test_goes_on(ab_test,
                                                                                  models):
    record(ab_test, models[0], right=3)
    record(ab_test, models[1], right=0, waiting=4)
    with pytest.raises(Conflict, match="no feedback for extra trees 0.0.1; the test keeps "
                                       "running"):
        services.ab_test_stop(ab_test_id=ab_test.pk, stopped_by="ann")
    ab_test.refresh_from_db()
    assert ab_test.ended_at is None
    assert [status_of(m) for m in models] == ["ab_testing", "ab_testing"]


def test_stopping_promotes_the_more_accurate_model_and_archives_the_incumbent(ab_test,
                                                                             models):
    rf, et = models
    record(ab_test, rf, right=60, wrong=40)
    record(ab_test, et, right=80, wrong=20, waiting=5)
    stopped = services.ab_test_stop(ab_test_id=ab_test.pk, stopped_by="ann")
    assert stopped.ended_at is not None
    assert status_of(et) == "production" and status_of(rf) == "archived"
    assert stopped.results["promoted"] == et.pk
    assert stopped.results["models"][1]["accuracy"] == 0.8
    assert stopped.results["comparisons"][0]["p_value"] < 0.01
    assert "extra trees 0.0.1: 105 requests, 100 with feedback, 80 correct" in stopped.summary
    assert "status changes: extra trees 0.0.1 -> production; random forest 0.0.1 -> " \
           "archived" in stopped.summary


def test_when_the_incumbent_wins_it_returns_to_production_and_the_other_to_testing(ab_test,
                                                                                  models):
    rf, et = models
    record(ab_test, rf, right=9, wrong=1)
    record(ab_test, et, right=5, wrong=5)
    services.ab_test_stop(ab_test_id=ab_test.pk, stopped_by="ann")
    assert status_of(rf) == "production" and status_of(et) == "testing"


def test_a_tie_keeps_the_incumbent_and_says_so(ab_test, models):
    rf, et = models
    record(ab_test, rf, right=7, wrong=3)
    record(ab_test, et, right=14, wrong=6)
    stopped = services.ab_test_stop(ab_test_id=ab_test.pk, stopped_by="ann")
    assert stopped.results["tie"] is True
    assert status_of(rf) == "production"
    assert "tie on accuracy" in stopped.summary


def test_stopping_twice_is_a_conflict_that_changes_nothing(ab_test, models):
    record(ab_test, models[0], right=1)
    record(ab_test, models[1], right=1, wrong=1)
    services.ab_test_stop(ab_test_id=ab_test.pk, stopped_by="ann")
    before = list(MLModelStatus.objects.values_list("id", "status", "active"))
    with pytest.raises(Conflict, match=f"A/B test {ab_test.pk} was already stopped"):
        services.ab_test_stop(ab_test_id=ab_test.pk, stopped_by="bob")
    assert list(MLModelStatus.objects.values_list("id", "status", "active")) == before


def test_stopping_an_unknown_test_is_a_404(db):
    with pytest.raises(NotFound, match="no A/B test with id 424242"):
        services.ab_test_stop(ab_test_id=424242, stopped_by="ann")


def test_concurrent_stops_promote_exactly_once(transactional_db, sample_row):
    from django.core.management import call_command
    import io

    call_command("register_models", stdout=io.StringIO())
    rf, et = MLModel.objects.order_by("id")
    test = services.ab_test_create(title="race", created_by="ann", mlmodels=[rf, et])
    record(test, rf, right=5, wrong=5)
    record(test, et, right=8, wrong=2)

    barrier = threading.Barrier(4)
    outcomes = []

    def stop():
        try:
            barrier.wait()
            services.ab_test_stop(ab_test_id=test.pk, stopped_by=threading.current_thread().name)
            outcomes.append("stopped")
        except Conflict as exc:
            outcomes.append(f"conflict: {exc.detail}")
        finally:
            connection.close()

    threads = [threading.Thread(target=stop, name=f"stopper-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes)[-1] == "stopped" and outcomes.count("stopped") == 1, outcomes
    assert all("already stopped" in o for o in outcomes if o != "stopped")
    assert MLModelStatus.objects.filter(status="production").count() == 2  # rf at start, then et
    assert MLModelStatus.objects.filter(status="production", active=True).get().mlmodel == et
    assert MLModelStatus.objects.filter(mlmodel=rf, status="archived").count() == 1
