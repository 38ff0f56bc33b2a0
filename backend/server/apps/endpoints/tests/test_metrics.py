"""Prometheus metrics in one process: each is counted where it happens (tests/test_live_gunicorn.py
checks that two workers add up)."""
import pytest
from prometheus_client import REGISTRY

from apps.endpoints import predictions, services
from apps.endpoints.models import MLModel
from apps.endpoints.registry import registry


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def rf(registered):
    return registered["random forest"]


def rf_labels(rf, **more):
    return {"endpoint": "classifier", "model": rf.name, "version": rf.version, **more}


def test_predictions_are_counted_by_model_status_test_and_label(anon, rf, sample_row):
    labels = rf_labels(rf, status="production", ab_test="", label="<=50K")
    before = sample("mlregistry_predictions_total", **labels)
    calls = sample("mlregistry_model_seconds_count", **rf_labels(rf))
    anon.post("/api/v1/classifier/predict", [sample_row] * 3, format="json")
    anon.post("/api/v1/classifier/predict", sample_row, format="json")
    assert sample("mlregistry_predictions_total", **labels) == before + 4
    assert sample("mlregistry_model_seconds_count", **rf_labels(rf)) == calls + 2  # per call
    assert sample("mlregistry_request_seconds_count", route="predict", method="POST",
                  code="200") >= 2


def test_feedback_and_agreement_are_counted_per_model(rf, sample_row):
    served = [predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
              for _ in range(3)]
    before = (sample("mlregistry_feedback_total", **rf_labels(rf)),
              sample("mlregistry_feedback_agreeing_total", **rf_labels(rf)))
    for mlrequest, label in zip(served, ["<=50K", "<=50K", ">50K"]):
        services.feedback_set(mlrequest=mlrequest, feedback=label)
    services.feedback_set(mlrequest=served[0], feedback="<=50K")  # sent again: counted once
    assert sample("mlregistry_feedback_total", **rf_labels(rf)) == before[0] + 3
    assert sample("mlregistry_feedback_agreeing_total", **rf_labels(rf)) == before[1] + 2


def test_rate_limited_requests_are_counted(anon, rf, sample_row, settings):
    settings.PREDICT_RATE = "1/day"
    before = sample("mlregistry_rate_limited_requests_total")
    codes = [anon.post("/api/v1/classifier/predict", sample_row, format="json").status_code
             for _ in range(3)]
    assert codes == [200, 429, 429]
    assert sample("mlregistry_rate_limited_requests_total") == before + 2


def test_refused_artifacts_and_load_times_are_counted(rf):
    registry.clear()
    loads = sample("mlregistry_model_load_seconds_count", model=rf.name, version=rf.version,
                   format="onnx")
    registry.get(rf)
    assert sample("mlregistry_model_load_seconds_count", model=rf.name, version=rf.version,
                  format="onnx") == loads + 1
    MLModel.objects.filter(pk=rf.pk).update(artifact_sha256="0" * 64)
    rf.refresh_from_db()
    refused = sample("mlregistry_artifacts_refused_total", model=rf.name, version=rf.version,
                     reason="checksum")
    with pytest.raises(Exception):
        registry.get(rf)
    assert sample("mlregistry_artifacts_refused_total", model=rf.name, version=rf.version,
                  reason="checksum") == refused + 1
    registry.clear()


def test_metrics_are_text_and_may_need_a_token(client, settings, db):  # drift: from the db
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert b"# TYPE mlregistry_predictions_total counter" in response.content
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
