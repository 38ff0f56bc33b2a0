"""Issue 11's experiments through the services and the API, on the real database: promotion
policies, auto-stop on the always-valid result, Thompson-sampling routing and shadow models.
(The statistics themselves, and their simulations, are tested without a database.)"""
import io
import threading

import pytest
from django.core.management import call_command
from django.db import connection

from apps.endpoints import ab_statistics, predictions, selectors, services
from apps.endpoints.exceptions import Conflict, InvalidInput
from apps.endpoints.models import (
    ABTest, MLModel, MLModelStatus, MLRequest, ShadowPrediction,
)
from apps.endpoints.registry import registry
from apps.endpoints.tests.test_ab_services import record, status_of
from apps.webhooks.models import Event, Subscriber


def subscribe(endpoint):
    """A subscriber, so that the endpoint's events are recorded."""
    Subscriber.objects.create(endpoint=endpoint, url="https://hooks.example.com/ml",
                              created_by="ann")


@pytest.fixture
def models(registered):
    return registered["random forest"], registered["extra trees"]


def start(models, **settings):
    return services.ab_test_create(title="rf vs et", created_by="ann", mlmodels=list(models),
                                   **settings)


def production():
    return MLModelStatus.objects.get(status="production", active=True).mlmodel


def pending(ab_test, mlmodel, n, response=">50K"):
    """``n`` requests routed by the test to ``mlmodel``, waiting for feedback."""
    return MLRequest.objects.bulk_create(
        MLRequest(mlmodel=mlmodel, ab_test=ab_test, input_data={}, full_response={},
                  response=response) for _ in range(n))


def give_feedback(mlrequest, feedback):
    """Feedback as the API gives it: on the request as its queryset loads it."""
    return services.feedback_set(mlrequest=selectors.mlrequest_list().get(pk=mlrequest.pk),
                                 feedback=feedback)


# --- promotion policies -------------------------------------------------------------------

def test_best_promotes_the_leader_and_says_the_difference_is_not_significant(models):
    rf, et = models
    test = start(models)
    record(test, rf, right=50, wrong=50)
    record(test, et, right=55, wrong=45)
    stopped = services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")
    assert production() == et and status_of(rf) == "archived"
    decision = stopped.results["decision"]
    assert decision["promote"] == et.pk and decision["significant"] is False
    assert "promoted on a difference that is not significant" in decision["reason"]
    assert decision["reason"] in stopped.summary


def test_significant_keeps_production_without_a_significant_winner(models):
    rf, et = models
    subscribe(rf.endpoint)
    test = start(models, policy="significant")
    record(test, rf, right=50, wrong=50)
    record(test, et, right=55, wrong=45)
    stopped = services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")
    assert production() == rf and status_of(et) == "testing"
    assert stopped.results["promoted"] is None and stopped.results["production"] == rf.pk
    reason = stopped.results["decision"]["reason"]
    assert "production stays" in reason, reason
    assert "random forest 0.0.1 -> production (kept)" in stopped.summary
    # Nothing was promoted, so subscribers hear of the stop but of no promotion.
    assert not Event.objects.filter(type="model.promoted").exclude(
        data__ab_test=None).exists()
    assert Event.objects.get(type="abtest.stopped").data["promoted"] is None


def test_significant_promotes_a_clearly_better_challenger(models):
    rf, et = models
    test = start(models, policy="significant")
    record(test, rf, right=500, wrong=500)
    record(test, et, right=900, wrong=100)
    stopped = services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")
    assert production() == et and status_of(rf) == "archived"
    assert stopped.results["decision"]["significant"] is True
    assert stopped.results["promoted"] == et.pk


def test_significant_promotes_a_challenger_shown_better_than_the_incumbent(models):
    """Three models: the leader is not yet shown better than the incumbent (little feedback),
    but the runner-up is, on plenty: the runner-up is promoted."""
    rf, et = models
    third = registered_third(rf)
    test = start([rf, et, third], policy="significant")
    record(test, rf, right=700, wrong=300)
    record(test, et, right=1600, wrong=400)
    record(test, third, right=33, wrong=7)
    stopped = services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")
    assert stopped.results["promoted"] == et.pk, stopped.results["decision"]
    assert production() == et and status_of(rf) == "archived" and status_of(third) == "testing"
    assert "third 1 is more accurate still" in stopped.results["decision"]["reason"]


def test_a_production_model_set_by_hand_during_a_test_stays(models):
    rf, et = models
    third = registered_third(rf)
    test = start(models, policy="significant")
    services.mlmodel_status_set(mlmodel=third, status="production", created_by="ann")
    record(test, rf, right=50, wrong=50)
    record(test, et, right=50, wrong=50)
    services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")
    assert production() == third
    assert status_of(rf) == status_of(et) == "testing"


def test_significant_without_the_incumbent_leaves_production_alone(models):
    rf, et = models
    other = registered_third(rf)
    test = start([et, other], policy="significant")
    record(test, et, right=60, wrong=40)
    record(test, other, right=55, wrong=45)
    stopped = services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")
    assert production() == rf
    assert status_of(et) == status_of(other) == "testing"
    assert stopped.results["production"] is None


# --- auto-stop ----------------------------------------------------------------------------

def test_an_auto_stop_test_stops_itself_when_the_always_valid_result_is_significant(models):
    rf, et = models
    test = start(models, auto_stop=True, policy="significant")
    record(test, rf, right=100, wrong=100)
    waiting = pending(test, et, 300)
    given = 0
    for mlrequest in waiting:
        give_feedback(mlrequest, ">50K")  # the challenger is right every time
        given += 1
        test.refresh_from_db()
        if test.ended_at is not None:
            break
    assert test.ended_at is not None, "never stopped"
    assert given < 300
    assert test.results["stopped_by"] == "auto-stop (significant)"
    assert production() == et
    # It stopped at the first feedback where the always-valid result was significant.
    before = ab_statistics.results(
        [c if c.mlmodel == rf.pk else
         ab_statistics.ArmCounts(**{**c.__dict__, "feedback": c.feedback - 1,
                                    "correct": c.correct - 1})
         for c in selectors.ab_test_counts(test)], alpha=test.alpha, policy=test.policy)
    assert ab_statistics.auto_stop_reason(before, max_feedback=None) is None


def test_an_auto_stop_test_stops_when_its_budget_is_spent(models):
    rf, et = models
    test = start(models, auto_stop=True, max_feedback=10, policy="significant")
    rf_waiting, et_waiting = pending(test, rf, 5), pending(test, et, 5)
    for a, b in zip(rf_waiting, et_waiting):
        give_feedback(a, ">50K")
        test.refresh_from_db()
        assert test.ended_at is None
        give_feedback(b, ">50K")
    test.refresh_from_db()
    assert test.ended_at is not None
    assert test.results["stopped_by"] == "auto-stop (budget)"
    assert production() == rf  # equal accuracy: the incumbent stays


def test_feedback_on_a_test_without_auto_stop_never_stops_it(models):
    rf, et = models
    test = start(models)
    record(test, rf, right=0, wrong=200)
    for mlrequest in pending(test, et, 50):
        give_feedback(mlrequest, ">50K")
    test.refresh_from_db()
    assert test.ended_at is None


def test_concurrent_feedback_stops_an_auto_stop_test_exactly_once(transactional_db):
    call_command("register_models", stdout=io.StringIO())
    rf, et = MLModel.objects.order_by("id")
    subscribe(rf.endpoint)
    test = start([rf, et], auto_stop=True, policy="significant")
    # Just short of significance: one more right answer from the challenger tips it over.
    record(test, rf, right=100, wrong=100)
    right = 100
    while True:
        counts = [ab_statistics.ArmCounts(rf.pk, "rf", "1", 1, 200, 200, 100, True),
                  ab_statistics.ArmCounts(et.pk, "et", "1", 1, right + 1, right + 1, right + 1)]
        if ab_statistics.auto_stop_reason(ab_statistics.results(counts, policy="significant"),
                                          max_feedback=None):
            break
        right += 1
    record(test, et, right=right)
    waiting = pending(test, et, 6)

    barrier = threading.Barrier(len(waiting))
    errors = []

    def feedback(mlrequest):
        try:
            barrier.wait()
            give_feedback(mlrequest, ">50K")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=feedback, args=(r,)) for r in waiting]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert MLRequest.objects.filter(pk__in=[r.pk for r in waiting],
                                    feedback=">50K").count() == len(waiting)
    test.refresh_from_db()
    assert test.ended_at is not None
    assert Event.objects.filter(type="abtest.stopped").count() == 1
    assert MLModelStatus.objects.filter(mlmodel=et, status="production").count() == 1
    assert production() == et


# --- Thompson sampling --------------------------------------------------------------------

def test_thompson_shares_follow_the_feedback_and_routing_follows_the_shares(models, sample_row):
    rf, et = models
    test = start(models, strategy="thompson")
    assert sorted(test.arms.values_list("share", flat=True)) == [0.5, 0.5]
    record(test, rf, right=20, wrong=30)
    waiting = pending(test, et, 50)
    for mlrequest in waiting:
        give_feedback(mlrequest, ">50K" if mlrequest.pk % 5 else "<=50K")  # 80% right
    shares = dict(test.arms.values_list("mlmodel_id", "share"))
    assert shares[et.pk] > 0.9 and shares[rf.pk] >= 0.05
    assert shares[et.pk] + shares[rf.pk] == pytest.approx(1)

    served = predictions.predictions_create(endpoint_name="classifier", status="ab_testing",
                                            rows=[sample_row] * 400)
    share_et = sum(r.mlmodel_id == et.pk for r in served) / len(served)
    assert share_et > 0.8, share_et


def test_fixed_split_shares_do_not_move_with_feedback(models):
    rf, et = models
    test = start(models, split=[3, 1])
    assert dict(test.arms.values_list("mlmodel_id", "share")) == {rf.pk: 0.75, et.pk: 0.25}
    for mlrequest in pending(test, et, 20):
        give_feedback(mlrequest, ">50K")
    assert dict(test.arms.values_list("mlmodel_id", "share")) == {rf.pk: 0.75, et.pk: 0.25}


@pytest.mark.parametrize("settings, fragment", [
    ({"policy": "bravest"}, "policy: 'bravest' is not a policy"),
    ({"strategy": "greedy"}, "strategy: 'greedy' is not a strategy"),
    ({"alpha": 0.5}, "alpha: the significance level must be between 0 and 0.5"),
    ({"max_feedback": 100}, "max_feedback: a feedback budget applies to a test that stops"),
    ({"min_share": 0.5, "strategy": "thompson"}, "min_share: each of 2 models"),
    ({"min_share": 0, "strategy": "thompson"}, "min_share: each of 2 models' least share must "
                                               "be above 0"),
    ({"split": [1e-320, 1e6]}, "split: the weights are too far apart"),
])
def test_bad_experiment_settings_are_refused(models, settings, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        start(models, **settings)
    assert ABTest.objects.count() == 0


def test_the_api_starts_a_test_with_its_settings_and_reports_both_results(api, models):
    rf, et = models
    response = api.post("/api/v1/abtests", {
        "title": "t", "created_by": "ann", "mlmodels": [rf.pk, et.pk], "policy": "significant",
        "alpha": 0.01, "auto_stop": True, "max_feedback": 5000, "strategy": "thompson",
        "min_share": 0.1}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert {k: body[k] for k in ("policy", "alpha", "auto_stop", "max_feedback", "strategy",
                                 "min_share")} == {
        "policy": "significant", "alpha": 0.01, "auto_stop": True, "max_feedback": 5000,
        "strategy": "thompson", "min_share": 0.1}
    assert [m["share"] for m in body["models"]] == [0.5, 0.5]
    test = ABTest.objects.get()
    record(test, rf, right=40, wrong=60)
    record(test, et, right=60, wrong=40)
    results = api.get(f"/api/v1/abtests/{test.pk}").json()["results"]
    comparison = results["comparisons"][0]
    assert {"p_value", "cs", "significant"} <= comparison["sequential"].keys()
    assert comparison["sequential"]["p_value"] > comparison["p_value"]  # the price of peeking
    assert results["decision"]["policy"] == "significant"


@pytest.mark.parametrize("change, fragment", [
    ({"policy": "bravest"}, "policy"),
    ({"alpha": 0.7}, "alpha"),
    ({"alpha": "NaN"}, "alpha"),
    ({"min_share": -0.1}, "min_share"),
    ({"max_feedback": 0, "auto_stop": True}, "max_feedback"),
    ({"strategy": "thompson", "min_share": 0.45, "mlmodels": "three"}, "min_share"),
])
def test_the_api_names_a_bad_setting(api, models, change, fragment):
    rf, et = models
    ids = [rf.pk, et.pk]
    if change.get("mlmodels") == "three":
        third = services.mlmodel_create(endpoint=rf.endpoint, name="third", version="1",
                                        code=rf.code, owner="ann",
                                        artifact_path=rf.artifact_path)
        ids.append(third.pk)
        change = {k: v for k, v in change.items() if k != "mlmodels"}
    response = api.post("/api/v1/abtests", {"title": "t", "created_by": "ann", "mlmodels": ids,
                                            **change}, format="json")
    assert response.status_code == 400, response.json()
    assert fragment in str(response.json())
    assert ABTest.objects.count() == 0


# --- shadow models ------------------------------------------------------------------------

def registered_third(rf):
    return services.mlmodel_create(endpoint=rf.endpoint, name="third", version="1", code=rf.code,
                                   owner="ann", artifact_path=rf.artifact_path)


@pytest.fixture
def shadowed(models):
    """The extra trees in shadow beside the random forest in production."""
    rf, et = models
    services.mlmodel_status_set(mlmodel=et, status="shadow", created_by="ann")
    return rf, et


def test_a_shadow_scores_every_production_request_without_answering(shadowed, sample_row):
    rf, et = shadowed
    one = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    batch = predictions.predictions_create(endpoint_name="classifier", rows=[sample_row] * 5)
    assert {r.mlmodel_id for r in [one, *batch]} == {rf.pk}
    stored = ShadowPrediction.objects.filter(mlmodel=et)
    assert sorted(stored.values_list("mlrequest_id", flat=True)) == sorted(
        r.pk for r in [one, *batch])
    expected = registry.get(et).compute_predictions([sample_row])[0]
    assert stored.first().full_response == expected
    assert stored.first().response == expected["label"]


def test_a_shadow_does_not_score_requests_production_did_not_serve(shadowed, sample_row):
    rf, et = shadowed
    with pytest.raises(InvalidInput, match="'shadow' is not a status that serves predictions"):
        predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                      status="shadow")  # a shadow never answers
    services.mlmodel_status_set(mlmodel=registered_third(rf), status="testing", created_by="a")
    predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                  status="testing")
    predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                  version=rf.version, name=rf.name)
    assert ShadowPrediction.objects.count() == 1  # the narrowed production request only


def test_a_failing_shadow_never_costs_production_its_answer(shadowed, sample_row, monkeypatch):
    rf, et = shadowed
    real = registry.get

    def broken(mlmodel):
        if mlmodel.pk == et.pk:
            raise RuntimeError("the shadow's artifact is gone")
        return real(mlmodel)

    monkeypatch.setattr(registry, "get", broken)
    answered = predictions.predictions_create(endpoint_name="classifier", rows=[sample_row] * 3)
    assert [r.mlmodel_id for r in answered] == [rf.pk] * 3
    assert MLRequest.objects.count() == 3 and ShadowPrediction.objects.count() == 0


def test_feedback_counts_for_the_shadow_with_a_paired_comparison(shadowed, sample_row, api):
    rf, et = shadowed
    served = predictions.predictions_create(endpoint_name="classifier", rows=[sample_row] * 12)
    shadow_label = ShadowPrediction.objects.first().response
    # Make the answers disagree where the test needs them to: 8 requests where only the
    # shadow is right, 1 where only production is, 3 where both are.
    for i, mlrequest in enumerate(served):
        if i < 8:
            MLRequest.objects.filter(pk=mlrequest.pk).update(response="other")
            feedback = shadow_label
        elif i < 9:
            ShadowPrediction.objects.filter(mlrequest=mlrequest).update(response="other")
            feedback = mlrequest.response
        else:
            feedback = shadow_label
            MLRequest.objects.filter(pk=mlrequest.pk).update(response=shadow_label)
        MLRequest.objects.filter(pk=mlrequest.pk).update(feedback=feedback)

    body = api.get(f"/api/v1/mlmodels/{et.pk}/shadow").json()
    assert (body["requests"], body["feedback"], body["correct"]) == (12, 12, 11)
    paired = body["paired"]
    assert (paired["only_shadow_right"], paired["only_production_right"]) == (8, 1)
    assert paired["production_correct"] == 4
    assert paired["p_value"] == pytest.approx(ab_statistics.mcnemar(1, 8))
    assert paired["p_value"] == pytest.approx(0.0390625)  # 2 * P(X <= 1), X ~ Bin(9, 1/2)
    assert paired["significant"] is True


def test_promoting_a_shadow_is_a_status_change(shadowed, sample_row):
    rf, et = shadowed
    services.mlmodel_status_set(mlmodel=et, status="production", created_by="ann")
    assert status_of(rf) == "archived"
    answered = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    assert answered.mlmodel_id == et.pk
    assert ShadowPrediction.objects.filter(mlrequest=answered).count() == 0


def test_the_shadow_api_and_page_for_a_model_never_shadowed(api, models, client):
    rf, et = models
    body = api.get(f"/api/v1/mlmodels/{et.pk}/shadow").json()
    assert body["requests"] == 0 and body["accuracy"] is None
    assert body["paired"]["p_value"] == 1.0
    assert "As a shadow" not in client.get(f"/models/{et.pk}").content.decode()


def test_the_model_page_shows_the_shadow_comparison(shadowed, sample_row, client):
    rf, et = shadowed
    served = predictions.predictions_create(endpoint_name="classifier", rows=[sample_row] * 4)
    for mlrequest in served:
        services.feedback_set(mlrequest=mlrequest, feedback=mlrequest.response)
    page = client.get(f"/models/{et.pk}").content.decode()
    assert "As a shadow" in page and "McNemar" in page
    assert '<td id="shadow-requests">4</td>' in page


def test_a_shadow_costs_the_request_no_query_on_postgresql(shadowed, sample_row):
    """One SELECT finds production and its shadows; one statement stores the requests and the
    shadow answers (PostgreSQL; SQLite takes a second INSERT)."""
    from django.test.utils import CaptureQueriesContext

    predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)  # warm
    with CaptureQueriesContext(connection) as queries:
        predictions.predictions_create(endpoint_name="classifier", rows=[sample_row] * 3)
    # (The test runs inside the test case's transaction, where the write takes a savepoint so a
    # failed shadow write can be retried without it; served in autocommit, it takes none.)
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries
                  if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    if connection.vendor == "postgresql":
        assert statements == ["SELECT", "WITH"], statements
    assert ShadowPrediction.objects.count() == 4


def test_shadow_answers_that_cannot_be_stored_are_dropped_not_the_request(
        shadowed, sample_row, monkeypatch, caplog):
    rf, et = shadowed
    monkeypatch.setattr(predictions, "_SHADOWS_CTE", "WITH broken AS (")
    monkeypatch.setattr(predictions, "_INSERT_SHADOWS_SQLITE", "INSERT INTO nowhere {table}")
    answered = predictions.predictions_create(endpoint_name="classifier", rows=[sample_row] * 2)
    assert [r.mlmodel_id for r in answered] == [rf.pk, rf.pk]
    assert MLRequest.objects.filter(pk__in=[r.pk for r in answered]).count() == 2
    assert ShadowPrediction.objects.count() == 0
    assert "shadow answers not stored" in caplog.text


def test_the_admin_starts_a_test_with_its_settings_through_the_service(admin_client, models):
    rf, et = models
    form = {"title": "from the admin", "mlmodels": [rf.pk, et.pk], "split": "1, 3",
            "policy": "significant", "alpha": "0.01", "auto_stop": "on", "max_feedback": "500",
            "strategy": "thompson", "min_share": "0.1"}
    refused = admin_client.post("/admin/endpoints/abtest/add/",
                                {**form, "mlmodels": [rf.pk]}, follow=True)
    assert "an A/B test needs at least two models, got 1" in refused.content.decode()
    bad_split = admin_client.post("/admin/endpoints/abtest/add/", {**form, "split": "1, x"})
    assert "give numbers separated by commas" in bad_split.content.decode()
    assert ABTest.objects.count() == 0

    response = admin_client.post("/admin/endpoints/abtest/add/", form, follow=True)
    assert response.status_code == 200
    test = ABTest.objects.get()
    assert (test.title, test.policy, test.alpha, test.auto_stop, test.max_feedback,
            test.strategy, test.min_share, test.created_by) == (
        "from the admin", "significant", 0.01, True, 500, "thompson", 0.1, "admin")
    assert sorted(test.arms.values_list("weight", flat=True)) == [1.0, 3.0]
    assert status_of(rf) == status_of(et) == "ab_testing"
    again = admin_client.post("/admin/endpoints/abtest/add/", form)
    assert "already in running A/B test" in again.content.decode()
    page = admin_client.get(f"/admin/endpoints/abtest/{test.pk}/change/").content.decode()
    assert "significant" in page and 'name="title"' not in page  # a record, read-only


def test_feedback_on_a_request_pruned_meanwhile_is_a_404(models):
    from apps.endpoints.exceptions import NotFound

    rf, _ = models
    mlrequest, = MLRequest.objects.bulk_create([MLRequest(
        mlmodel=rf, input_data={}, full_response={}, response=">50K")])
    loaded = selectors.mlrequest_list().get(pk=mlrequest.pk)
    MLRequest.objects.filter(pk=mlrequest.pk).delete()  # prune_requests, in between
    with pytest.raises(NotFound, match=f"no request with id {mlrequest.pk}"):
        services.feedback_set(mlrequest=loaded, feedback=">50K")
