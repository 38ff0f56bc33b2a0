"""The REST API over Django's test client: every route, and every bad input named in a 4xx."""
import json

import pytest

from apps.endpoints.models import MLModelStatus, MLRequest

PREDICT = "/api/v1/classifier/predict"


def predict(api, body, query=""):
    return api.post(PREDICT + query, data=json.dumps(body), content_type="application/json")


def test_predict_answers_the_tutorial_sample(api, registered, sample_row):
    response = predict(api, sample_row)
    assert response.status_code == 200
    body = response.json()
    rf = registered["random forest"]
    assert body["label"] == "<=50K" and body["status"] == "OK"
    assert 0 <= body["probability"] < 0.5
    assert body["model"] == {"id": rf.pk, "name": "random forest", "version": "0.0.1"}
    stored = MLRequest.objects.get(pk=body["request_id"])
    assert stored.input_data == sample_row and stored.response == "<=50K"
    assert stored.full_response["probability"] == body["probability"]


def test_predict_selects_by_status_and_version(api, registered, sample_row):
    body = predict(api, sample_row, "?status=testing&version=0.0.1").json()
    assert body["model"]["name"] == "extra trees"


def test_predict_accepts_a_trailing_slash(api, registered, sample_row):
    response = api.post(PREDICT + "/", data=sample_row, format="json")
    assert response.status_code == 200


@pytest.mark.parametrize("mutate, status, fragment", [
    (lambda row: row.pop("age"), 400, "missing feature(s): age"),
    (lambda row: row.update(age="thirty"), 400, "'age' must be a number, got str 'thirty'"),
    (lambda row: row.update(sex=1), 400, "'sex' must be a string"),
    (lambda row: row.update(salary=1), 400, "unknown feature(s): salary"),
])
def test_predict_names_the_bad_feature_and_stores_nothing(api, registered, sample_row, mutate,
                                                          status, fragment):
    mutate(sample_row)
    response = predict(api, sample_row)
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert response.json()["code"] == "invalid"
    assert MLRequest.objects.count() == 0


@pytest.mark.parametrize("body, content_type, status, fragment", [
    ("[1, 2, 3]", "application/json", 400, "[0] a row must be a JSON object"),
    ('"text"', "application/json", 400, "a row must be a JSON object of the 14 Adult features, "
                                         "got str"),
    ('{"age": 37,', "application/json", 400, "JSON parse error"),
    ("age=37", "text/plain", 415, "Unsupported media type"),
])
def test_predict_refuses_a_body_that_is_not_a_json_object(api, registered, body, content_type,
                                                          status, fragment):
    response = api.post(PREDICT, data=body, content_type=content_type)
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert MLRequest.objects.count() == 0


@pytest.mark.parametrize("path, status, fragment", [
    ("/api/v1/regressor/predict", 404, "unknown endpoint 'regressor'"),
    (PREDICT + "?status=staging", 404, "no model of endpoint 'classifier' matches status "
                                       "'staging'"),
    (PREDICT + "?status=production&version=9.9.9", 404, "version '9.9.9'"),
    (PREDICT + "?status=prod", 400, "status: 'prod' is not a status that serves predictions; "
                                    "expected one of: testing, staging, production, ab_testing"),
    (PREDICT + "?status=archived", 400, "status: 'archived' is not a status that serves"),
])
def test_predict_says_why_no_model_can_answer(api, registered, sample_row, path, status,
                                              fragment):
    response = api.post(path, data=sample_row, format="json")
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert MLRequest.objects.count() == 0


def test_predict_asks_to_narrow_an_ambiguous_choice(api, registered, sample_row):
    rf = registered["random forest"]
    api.post("/api/v1/mlmodels", format="json", data={
        "endpoint": rf.endpoint_id, "name": "random forest", "version": "0.0.2",
        "code": rf.code, "owner": "ann", "artifact_path": rf.artifact_path})
    response = predict(api, sample_row, "?status=testing")
    assert response.status_code == 400
    assert "ambiguous: 2 models" in response.json()["detail"]


@pytest.fixture
def served(api, registered, sample_row):
    return predict(api, sample_row).json()["request_id"]


@pytest.mark.parametrize("method", ["put", "patch"])
def test_feedback_is_recorded_by_put_or_patch(api, served, method):
    response = getattr(api, method)(f"/api/v1/mlrequests/{served}", {"feedback": ">50K"},
                                    format="json")
    assert response.status_code == 200
    assert response.json()["feedback"] == ">50K"
    assert MLRequest.objects.get(pk=served).feedback == ">50K"


@pytest.mark.parametrize("body, fragment", [
    ({"feedback": "rich"}, "feedback 'rich' is not a label of this model"),
    ({}, "This field is required."),
])
def test_bad_feedback_is_a_400_and_changes_nothing(api, served, body, fragment):
    response = api.put(f"/api/v1/mlrequests/{served}", body, format="json")
    assert response.status_code == 400
    assert fragment in json.dumps(response.json())
    assert MLRequest.objects.get(pk=served).feedback is None


def test_feedback_for_an_unknown_request_is_a_404(api, registered):
    response = api.put("/api/v1/mlrequests/999999", {"feedback": ">50K"}, format="json")
    assert response.status_code == 404


def test_requests_filter_by_feedback_model_and_date(api, served, registered, sample_row):
    et = registered["extra trees"]
    predict(api, sample_row, "?status=testing")
    api.put(f"/api/v1/mlrequests/{served}", {"feedback": "<=50K"}, format="json")

    def ids(query):
        return [r["id"] for r in api.get("/api/v1/mlrequests" + query).json()["results"]]

    assert ids("?has_feedback=true") == [served]
    assert len(ids("?has_feedback=false")) == 1
    assert len(ids(f"?mlmodel={et.pk}")) == 1
    assert len(ids("?created_after=2000-01-01T00:00:00Z")) == 2
    assert ids("?created_before=2000-01-01T00:00:00Z") == []
    # Offsets PostgreSQL does not take (beyond +/-15:59) are applied before the query.
    assert len(ids("?created_after=2000-01-01T00:00:00%2B19:00")) == 2
    assert ids("?created_after=2999-01-01T00:00:00-19:00") == []
    page = api.get("/api/v1/mlrequests").json()
    assert page["count"] == 2 and "next" in page


def test_endpoints_list_and_create(api, registered):
    assert [e["name"] for e in api.get("/api/v1/endpoints").json()["results"]] == ["classifier"]
    created = api.post("/api/v1/endpoints", {"name": "churn", "owner": "ann"}, format="json")
    assert created.status_code == 201 and created.json()["name"] == "churn"
    duplicate = api.post("/api/v1/endpoints", {"name": "churn", "owner": "bob"}, format="json")
    assert duplicate.status_code in (400, 409)
    assert "churn" in json.dumps(duplicate.json()) or "exists" in json.dumps(duplicate.json())


def test_mlmodels_list_shows_the_active_status_and_filters_by_it(api, registered):
    results = api.get("/api/v1/mlmodels").json()["results"]
    assert {m["name"]: m["status"] for m in results} == {
        "random forest": "production", "extra trees": "testing"}
    production = api.get("/api/v1/mlmodels?status=production").json()["results"]
    assert [m["name"] for m in production] == ["random forest"]
    assert api.get("/api/v1/mlmodels?endpoint_name=nope").json()["results"] == []
    assert api.get("/api/v1/mlmodels?status=bogus").status_code == 400


def test_mlmodels_create_registers_a_version(api, registered):
    rf = registered["random forest"]
    response = api.post("/api/v1/mlmodels", format="json", data={
        "endpoint": rf.endpoint_id, "name": "random forest", "version": "0.0.2", "code": rf.code,
        "owner": "ann", "artifact_path": rf.artifact_path, "status": "staging"})
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "staging"
    assert response.json()["artifact_sha256"] == rf.artifact_sha256


def test_a_version_registered_with_a_joblib_artifact_still_serves(api, registered, manifest,
                                                                   sample_row):
    rf = registered["random forest"]
    joblib_file = next(m for m in manifest["models"] if m["name"] == rf.name)["files"]["joblib"]
    created = api.post("/api/v1/mlmodels", format="json", data={
        "endpoint": rf.endpoint_id, "name": rf.name, "version": "0.0.1-joblib", "code": rf.code,
        "owner": "ann", "artifact_path": joblib_file["file"], "status": "staging"}).json()
    assert (created["artifact_format"], created["artifact_sha256"]) == ("joblib",
                                                                        joblib_file["sha256"])
    by_joblib = predict(api, sample_row, "?status=staging").json()
    by_onnx = predict(api, sample_row).json()
    assert by_joblib["model"]["version"] == "0.0.1-joblib"
    assert by_joblib["label"] == by_onnx["label"]
    assert abs(by_joblib["probability"] - by_onnx["probability"]) < 1e-5


@pytest.mark.parametrize("path, given, fragment", [
    ("random_forest-0.0.1.onnx", "pickle", 'artifact_format: "pickle" is not a valid choice'),
    ("manifest.json", None, "artifact_format: give the artifact's format, one of onnx, joblib"),
])
def test_the_artifact_format_is_known(api, registered, path, given, fragment):
    rf = registered["random forest"]
    body = {"endpoint": rf.endpoint_id, "name": "m", "version": "1", "code": rf.code,
            "owner": "ann", "artifact_path": path}
    if given:
        body["artifact_format"] = given
    response = api.post("/api/v1/mlmodels", body, format="json")
    assert response.status_code == 400 and fragment in response.json()["detail"]


def test_mlmodels_create_names_a_missing_field(api, registered):
    response = api.post("/api/v1/mlmodels", {"name": "x"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and "endpoint: This field is required." in body["detail"]
    assert {"endpoint", "version", "code", "owner", "artifact_path"} <= set(body["errors"])


def test_mlmodelstatuses_post_makes_a_new_active_status(api, registered):
    et = registered["extra trees"]
    response = api.post("/api/v1/mlmodelstatuses", format="json", data={
        "mlmodel": et.pk, "status": "production", "created_by": "ann"})
    assert response.status_code == 201
    assert response.json()["status"] == "production" and response.json()["active"]
    active = dict(MLModelStatus.objects.filter(active=True).values_list("mlmodel__name", "status"))
    assert active == {"extra trees": "production", "random forest": "archived"}
    listed = api.get(f"/api/v1/mlmodelstatuses?mlmodel={et.pk}&active=true").json()["results"]
    assert [s["status"] for s in listed] == ["production"]


@pytest.mark.parametrize("data, fragment", [
    ({"mlmodel": 999999, "status": "staging", "created_by": "a"}, "Invalid pk"),
    ({"status": "retired", "created_by": "a"}, "is not a valid choice"),
])
def test_mlmodelstatuses_post_refuses_bad_input(api, registered, data, fragment):
    data.setdefault("mlmodel", registered["extra trees"].pk)
    response = api.post("/api/v1/mlmodelstatuses", data, format="json")
    assert response.status_code == 400
    assert fragment in json.dumps(response.json())


def test_mlmodelstatuses_post_refuses_ab_testing(api, registered):
    response = api.post("/api/v1/mlmodelstatuses", format="json", data={
        "mlmodel": registered["extra trees"].pk, "status": "ab_testing", "created_by": "a"})
    assert response.status_code == 400
    assert "by starting an A/B test" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/api/v1/endpoints", "/api/v1/mlmodels",
                                  "/api/v1/mlmodelstatuses", "/api/v1/mlrequests", PREDICT])
def test_every_route_has_the_browsable_api(api, registered, path):
    response = api.get(path, HTTP_ACCEPT="text/html")
    assert response.status_code in (200, 405)
    assert b"Django REST framework" in response.content


def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/api/v1/{endpoint_name}/predict" in paths
    assert "/api/v1/mlrequests/{id}" in paths
    docs = api.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_health_live_and_ready(client, registered):
    assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").json() == {"status": "ok", "models": 2, "failing": []}


def test_the_browsable_predict_page_starts_with_the_example_row(anon, registered):
    page = anon.get(PREDICT, HTTP_ACCEPT="text/html").content.decode()
    assert "&quot;workclass&quot;: &quot;Private&quot;" in page  # in the raw data box
    assert 'name="hours-per-week"' in page and 'value="68' in page  # the HTML form


def test_the_browsable_predict_form_posts_one_row(anon, registered, sample_row):
    form = {name: "" if value is None else str(value) for name, value in sample_row.items()}
    form["occupation"] = ""  # a missing value, as an empty form field sends it
    response = anon.post(PREDICT, form, format="multipart")
    assert response.status_code == 200, response.json()
    stored = MLRequest.objects.get(pk=response.json()["request_id"])
    assert stored.input_data["age"] == 37.0 and stored.input_data["occupation"] is None


def test_the_ab_test_form_shows_its_fields_on_first_view(api, registered):
    page = api.get("/api/v1/abtests", HTTP_ACCEPT="text/html").content.decode()
    for field in ("title", "created_by", "mlmodels", "parent_mlmodel_1"):  # split: a list, JSON
        assert f'name="{field}"' in page


@pytest.mark.parametrize("path", ["/api/v1/mlrequests", "/api/v1/abtests", PREDICT,
                                  "/api/v1/stop_ab_test/1"])
def test_descriptions_render_without_literal_markup(api, registered, path):
    assert "``" not in api.get(path, HTTP_ACCEPT="text/html").content.decode()
