"""Drift in the registry: the training profile stored at registration, the drift route over a
model's latest requests (answered or scored as a shadow), its gauges on /metrics and its section
on the model's page. The PSI itself is tested without Django (apps/ml/tests/test_drift.py)."""
import html
import io
import random
import re

import pytest
from django.core.management import call_command
from django.db import OperationalError
from prometheus_client.parser import text_string_to_metric_families

from apps.endpoints import predictions, selectors
from apps.endpoints.models import MLModel, MLRequest, ShadowPrediction
from apps.ml.income_classifier.preprocessing import TARGET
from research import adult


@pytest.fixture(scope="module")
def held_out():
    """1,500 rows of adult.test as clients post them (no label), in a seeded random order."""
    rows = [{k: v for k, v in row.items() if k != TARGET} for row in adult.load("adult.test")]
    return random.Random(5).sample(rows, 1500)


def serve(rows, **choice):
    """The rows answered through the predict path, in batches as a client would send them."""
    for start in range(0, len(rows), 1000):
        predictions.predictions_create(endpoint_name="classifier", rows=rows[start:start + 1000],
                                       **choice)


def aged(rows):
    return [dict(row, age=row["age"] + 15) for row in rows]


@pytest.fixture
def rf(registered):
    return registered["random forest"]


def drift(client, mlmodel, query=""):
    return client.get(f"/api/v1/mlmodels/{mlmodel.pk}/drift{query}")


# Registration

def test_registration_stores_each_model_s_training_profile(registered, manifest):
    for entry in manifest["models"]:
        assert registered[entry["name"]].training_profile == entry["training_profile"]
        assert set(entry["training_profile"]["features"]) >= {"age", "workclass", "sex"}


def test_registration_fills_in_a_missing_profile_though_the_artifact_is_unchanged(registered,
                                                                                  manifest):
    MLModel.objects.update(training_profile={})  # as models registered before drift existed
    out = io.StringIO()
    call_command("register_models", stdout=out)
    assert "random forest 0.0.1: training profile updated" in out.getvalue()
    entry = manifest["models"][0]
    assert MLModel.objects.get(name=entry["name"]).training_profile == entry["training_profile"]
    again = io.StringIO()
    call_command("register_models", stdout=again)
    assert "random forest 0.0.1: already registered" in again.getvalue()


def test_the_api_registers_a_version_with_a_profile_and_refuses_a_malformed_one(api, rf):
    version = {"endpoint": rf.endpoint_id, "name": rf.name, "code": rf.code, "owner": "ann",
               "artifact_path": rf.artifact_path}
    created = api.post("/api/v1/mlmodels", format="json", data={
        **version, "version": "0.0.2", "training_profile": rf.training_profile})
    assert created.status_code == 201, created.json()
    assert MLModel.objects.get(pk=created.json()["id"]).training_profile == rf.training_profile
    broken = {"features": {"age": {"kind": "numeric", "edges": [30], "shares": [0.5, 0.6, 0]}}}
    refused = api.post("/api/v1/mlmodels", format="json", data={
        **version, "version": "0.0.3", "training_profile": broken})
    assert refused.status_code == 400
    assert refused.json()["detail"] == ("training_profile: features.age.shares: must add up to "
                                        "1, they add up to 1.1")
    assert not MLModel.objects.filter(version="0.0.3").exists()


# The drift route

def test_requests_like_the_training_data_have_not_drifted(anon, rf, held_out):
    serve(held_out[:1000])
    body = drift(anon, rf, "?last=1000").json()
    assert (body["mlmodel"], body["last"], body["requests"]) == (rf.pk, 1000, 1000)
    assert body["threshold"] == 0.2 and body["drifted"] == []
    psi = {f["feature"]: f["psi"] for f in body["features"]}
    assert max(psi.values()) < 0.1, psi
    age = next(f for f in body["features"] if f["feature"] == "age")
    assert age["bins"][0]["bin"] == "<= 22"
    assert age["bins"][0]["expected"] == pytest.approx(0.1196, abs=1e-4)  # of adult.data
    assert sum(b["actual"] for b in age["bins"]) == pytest.approx(1, abs=1e-5)


def test_shifted_requests_drift_on_the_shifted_feature_within_the_window(anon, rf, held_out):
    serve(held_out[:1000])
    serve(aged(held_out[1000:1500]))  # the latest 500: everyone 15 years older
    latest = drift(anon, rf, "?last=500").json()
    assert latest["requests"] == 500 and latest["drifted"] == ["age"]
    psi = {f["feature"]: f["psi"] for f in latest["features"]}
    assert psi["age"] > 0.2 and max(v for k, v in psi.items() if k != "age") < 0.1, psi
    wider = {f["feature"]: f["psi"] for f in drift(anon, rf, "?last=1500").json()["features"]}
    assert 0 < wider["age"] < psi["age"]  # a third of the window shifted: a smaller PSI
    default = drift(anon, rf).json()
    assert (default["last"], default["requests"]) == (1000, 1000)  # DRIFT_WINDOW


def test_a_shadow_s_requests_are_those_it_scored(anon, registered, held_out):
    rf, et = registered["random forest"], registered["extra trees"]
    serve(held_out[:300])  # answered by production; scored by extra trees as a shadow
    ShadowPrediction.objects.bulk_create(
        ShadowPrediction(mlrequest=r, mlmodel=et, full_response={}, response=r.response)
        for r in MLRequest.objects.filter(mlmodel=rf))
    serve(aged(held_out[300:600]), status="testing", name=et.name)  # then it answers, shifted
    newest = drift(anon, et, "?last=300").json()
    assert newest["requests"] == 300 and newest["drifted"] == ["age"]
    both = drift(anon, et, "?last=1000").json()
    assert both["requests"] == 600


def test_a_small_window_reports_psi_but_flags_nothing(anon, registered, held_out):
    """PSI is biased upward on a few rows: below 20 rows per bin nothing is flagged."""
    rf = registered["random forest"]
    serve(aged(held_out[:50]))
    few = drift(anon, rf, "?last=50").json()
    age = next(f for f in few["features"] if f["feature"] == "age")
    assert age["psi"] > 0.2 and age["enough"] is False and age["drifted"] is False
    assert few["drifted"] == []


def test_drift_reads_one_column_of_the_latest_rows_in_two_queries(rf, held_out,
                                                                  django_assert_num_queries):
    serve(held_out[:20])
    with django_assert_num_queries(2) as captured:  # answered, scored as a shadow
        rows = selectors.served_inputs(rf, last=5)
    assert rows == held_out[15:20][::-1]  # newest first
    answered = captured.captured_queries[0]["sql"]
    assert '"input_data"' in answered and '"full_response"' not in answered
    assert "LIMIT 5" in answered


def test_a_model_without_requests_has_no_psi_yet(anon, rf):
    response = drift(anon, rf)
    assert response.status_code == 200
    body = response.json()
    assert body["requests"] == 0 and body["drifted"] == []
    assert {f["psi"] for f in body["features"]} == {None}


def test_a_model_without_a_training_profile_is_a_conflict(anon, rf):
    MLModel.objects.filter(pk=rf.pk).update(training_profile={})
    response = drift(anon, rf)
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert "has no training profile" in response.json()["detail"]


def test_an_unreadable_stored_profile_is_a_conflict_not_a_crash(anon, rf):
    MLModel.objects.filter(pk=rf.pk).update(training_profile={"features": {"age": "old"}})
    response = drift(anon, rf)
    assert response.status_code == 409 and "cannot be read" in response.json()["detail"]
    assert "reference" in response.json()  # what is wrong with it is in the log


@pytest.mark.parametrize("query, problem", [
    ("?last=0", "last: Ensure this value is greater than or equal to 1."),
    ("?last=100001", "last: Ensure this value is less than or equal to 100000."),
    ("?last=many", "last: A valid integer is required."),
    ("?last=1.5", "last: A valid integer is required."),
])
def test_last_must_be_a_whole_number_from_1_to_100000(anon, rf, query, problem):
    response = drift(anon, rf, query)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and response.json()["detail"] == problem


def test_an_empty_last_is_the_default_as_an_empty_filter_is_no_filter(anon, rf):
    assert drift(anon, rf, "?last=").json()["last"] == 1000


def test_an_unknown_model_is_a_404(anon, registered):
    assert anon.get("/api/v1/mlmodels/999999/drift").status_code == 404


# /metrics

def drift_samples(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode())
            if family.name.startswith("mlregistry_drift")
            for s in family.samples}


def labels(mlmodel, **more):
    return tuple(sorted({"endpoint": "classifier", "model": mlmodel.name,
                         "version": mlmodel.version, **more}.items()))


def test_metrics_report_each_serving_model_s_drift_over_the_window(client, registered, held_out,
                                                                   settings):
    rf, et = registered["random forest"], registered["extra trees"]
    settings.DRIFT_WINDOW = 400
    serve(held_out[:600])
    serve(aged(held_out[600:800]))  # half the window
    samples = drift_samples(client)
    assert samples[("mlregistry_drift_requests", labels(rf))] == 400
    assert samples[("mlregistry_drift_features_drifted", labels(rf))] == 1
    assert samples[("mlregistry_drift_psi", labels(rf, feature="age"))] > 0.2
    assert samples[("mlregistry_drift_psi", labels(rf, feature="sex"))] < 0.1
    assert not any(key[1] == labels(et) for key in samples)  # no requests: no series
    page = client.get("/metrics").content.decode()
    assert "# TYPE mlregistry_drift_psi gauge" in page


def test_a_database_error_leaves_the_rest_of_metrics_standing(client, rf, held_out,
                                                              monkeypatch, caplog):
    serve(held_out[:10])

    def down():
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(selectors, "drift_watched_models", down)
    response = client.get("/metrics")
    assert response.status_code == 200
    page = response.content.decode()
    assert "mlregistry_predictions_total{" in page  # the other metrics are all there
    assert "# TYPE mlregistry_drift_psi gauge" in page and "mlregistry_drift_psi{" not in page
    assert "drift metrics skipped" in caplog.text


# The model's page

def words(response) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ",
                                                    response.content.decode())))


def test_the_model_page_flags_the_drifted_features(client, rf, held_out):
    serve(aged(held_out[:300]))
    page = client.get(f"/models/{rf.pk}")
    text = words(page)
    assert "Drift The last 300 requests (at most 1000) against the training data" in text
    assert re.search(r"age \d+\.\d{3} drifted", text), text
    assert re.search(r"sex 0\.0\d\d no", text)
    assert "Drifted: age " in text
    assert '<tr data-feature="age" class="drifted">' in page.content.decode()
    assert "age: each bin's share, training and requests" in text


def test_the_model_page_says_why_it_shows_no_drift(client, registered):
    rf, et = registered["random forest"], registered["extra trees"]
    assert "No requests yet to compare with the training data." in words(
        client.get(f"/models/{rf.pk}"))
    MLModel.objects.filter(pk=et.pk).update(training_profile={})
    assert "has no training profile" in words(client.get(f"/models/{et.pk}"))
