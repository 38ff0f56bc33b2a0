"""Errors outside the serializers: every answer under /api/ is JSON, whatever failed and where."""
import json

import pytest
from django.test import RequestFactory

from apps.endpoints import exceptions
from apps.endpoints.models import MLModel

PREDICT = "/api/v1/classifier/predict"


def test_a_host_the_service_does_not_answer_to_is_a_json_400(anon, settings):
    settings.ALLOWED_HOSTS = ["good.example"]
    response = anon.get("/api/v1/endpoints", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "the Host header names a host this service does not "
                                         "answer to", "code": "invalid"}


def test_a_failure_outside_a_view_is_a_json_500_with_a_reference(caplog):
    response = exceptions.handler500(RequestFactory().get("/api/v1/endpoints"))
    body = json.loads(response.content)
    assert response.status_code == 500 and body["code"] == "error"
    assert body["detail"] == f"internal error (reference {body['reference']})"
    assert body["reference"] in caplog.text


def test_outside_the_api_django_keeps_its_own_pages():
    response = exceptions.handler500(RequestFactory().get("/admin/"))
    assert response.status_code == 500 and b"<h1>Server Error (500)</h1>" in response.content


def test_the_schemas_own_formats_still_answer_errors_in_json(anon):
    response = anon.get("/api/schema/?format=nonsense")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_a_known_route_without_its_slash_redirects_as_before(anon):
    response = anon.get("/api/v1")
    assert response.status_code == 301 and response["Location"] == "/api/v1/"
    assert anon.get("/api/v1/nothing").status_code == 404


def test_a_multipart_body_over_the_limit_is_refused_before_it_is_read(api, registered):
    response = api.post("/api/v1/mlmodels", {"name": "x", "upload": ("f", b"x" * 1_100_000)},
                        format="multipart")
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert MLModel.objects.count() == 2


@pytest.mark.parametrize("field, value", [("metrics.note", "a\x00b"), ("description", "\x00")])
def test_a_multipart_field_is_held_to_the_json_rules(api, registered, field, value):
    rf = registered["random forest"]
    response = api.post("/api/v1/mlmodels", {
        "endpoint": rf.endpoint_id, "name": "m", "version": "1", "code": rf.code, "owner": "x",
        "artifact_path": rf.artifact_path, field: value}, format="multipart")
    assert response.status_code == 400 and response.json()["detail"].startswith(f"{field}: text")
    assert MLModel.objects.count() == 2
