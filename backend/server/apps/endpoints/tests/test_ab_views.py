"""The A/B test API: start, live results, stop, and each error as a 4xx that says which."""
import json

import pytest

from apps.endpoints.models import MLModelStatus, MLRequest

PREDICT = "/api/v1/classifier/predict"


@pytest.fixture
def ids(registered):
    return registered["random forest"].pk, registered["extra trees"].pk


def start(api, **body):
    return api.post("/api/v1/abtests", {"title": "rf vs et", "created_by": "ann", **body},
                    format="json")


def test_start_with_the_tutorial_fields(api, ids):
    response = start(api, parent_mlmodel_1=ids[0], parent_mlmodel_2=ids[1])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "running" and body["ended_at"] is None
    assert (body["parent_mlmodel_1"], body["parent_mlmodel_2"]) == ids
    assert [m["weight"] for m in body["models"]] == [1.0, 1.0]
    assert body["results"]["models"][0]["requests"] == 0


def test_start_with_a_list_of_models_and_a_split(api, ids):
    response = start(api, mlmodels=list(ids), split=[3, 1])
    assert response.status_code == 201
    assert [m["weight"] for m in response.json()["models"]] == [3.0, 1.0]


@pytest.mark.parametrize("make_body, fragment", [
    (lambda rf, et: {"mlmodels": [rf, 999999]}, 'Invalid pk \\"999999\\" - object does not exist'),
    (lambda rf, et: {"mlmodels": ["rf"]}, "Incorrect type"),
    (lambda rf, et: {}, "at least two models, got 0"),
    (lambda rf, et: {"mlmodels": [rf, et], "split": [1, 2, 3]}, "split has 3 weights for 2"),
    (lambda rf, et: {"mlmodels": [rf, et], "split": [1, -1]}, "must be positive"),
    (lambda rf, et: {"mlmodels": [rf, et], "parent_mlmodel_1": rf}, "not both"),
])
def test_bad_starts_say_what_is_wrong_and_change_nothing(api, ids, make_body, fragment):
    response = start(api, **make_body(*ids))
    assert response.status_code == 400
    assert fragment in json.dumps(response.json())
    assert MLModelStatus.objects.filter(status="ab_testing").count() == 0


def test_starting_on_a_busy_endpoint_is_a_409(api, ids):
    assert start(api, mlmodels=list(ids)).status_code == 201
    again = start(api, mlmodels=list(ids))
    assert again.status_code == 409
    assert "already in running A/B test" in again.json()["detail"]


def test_live_results_follow_feedback(api, ids, sample_row):
    test_id = start(api, mlmodels=list(ids)).json()["id"]
    for i in range(6):
        answer = api.post(f"{PREDICT}?status=ab_testing&user_id=u{i}", sample_row,
                          format="json").json()
        assert answer["ab_test"] == test_id
        api.put(f"/api/v1/mlrequests/{answer['request_id']}", {"feedback": "<=50K"},
                format="json")
    results = api.get(f"/api/v1/abtests/{test_id}").json()["results"]
    assert sum(m["requests"] for m in results["models"]) == 6
    assert sum(m["correct"] for m in results["models"]) == 6


def test_the_x_user_id_header_routes_like_the_query_parameter(api, ids, sample_row):
    start(api, mlmodels=list(ids))
    by_header = {api.post(f"{PREDICT}?status=ab_testing", sample_row, format="json",
                          HTTP_X_USER_ID="carol").json()["model"]["id"] for _ in range(6)}
    by_param = {api.post(f"{PREDICT}?status=ab_testing&user_id=carol", sample_row,
                         format="json").json()["model"]["id"] for _ in range(3)}
    assert len(by_header) == 1 and by_header == by_param


def test_the_default_url_answers_during_a_test(api, ids, sample_row):
    start(api, mlmodels=list(ids))
    response = api.post(PREDICT, sample_row, format="json")
    assert response.status_code == 200
    assert response.json()["model"]["id"] == ids[0] and response.json()["ab_test"] is None


def test_stop_promotes_and_reports(api, ids, sample_row):
    test_id = start(api, mlmodels=list(ids)).json()["id"]
    for i in range(12):
        answer = api.post(f"{PREDICT}?status=ab_testing&user_id=u{i}", sample_row,
                          format="json").json()
        truth = "<=50K" if answer["model"]["id"] == ids[1] else ">50K"  # ET right, RF wrong
        api.patch(f"/api/v1/mlrequests/{answer['request_id']}", {"feedback": truth},
                  format="json")
    response = api.post(f"/api/v1/stop_ab_test/{test_id}", {"stopped_by": "ann"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["state"] == "stopped" and body["results"]["promoted"] == ids[1]
    assert "extra trees 0.0.1 -> production" in body["summary"]
    production = api.get("/api/v1/mlmodels?status=production").json()["results"]
    assert [m["id"] for m in production] == [ids[1]]
    assert api.get(f"/api/v1/abtests/{test_id}").json()["results"] == body["results"]

    again = api.post(f"/api/v1/stop_ab_test/{test_id}")
    assert again.status_code == 409 and "already stopped" in again.json()["detail"]


def test_stop_without_feedback_is_a_409(api, ids, sample_row):
    test_id = start(api, mlmodels=list(ids)).json()["id"]
    response = api.post(f"/api/v1/stop_ab_test/{test_id}")
    assert response.status_code == 409
    assert "no feedback for random forest 0.0.1, extra trees 0.0.1" in response.json()["detail"]
    assert api.get(f"/api/v1/abtests/{test_id}").json()["state"] == "running"
    assert MLModelStatus.objects.filter(status="ab_testing", active=True).count() == 2


def test_stop_of_an_unknown_test_is_a_404(api, db):
    response = api.post("/api/v1/stop_ab_test/999999")
    assert response.status_code == 404 and "no A/B test with id 999999" in response.json()["detail"]


@pytest.mark.parametrize("test_id", ["9" * 5000, "\u0661"])  # beyond int()'s limit; Arabic 1
def test_a_test_id_that_is_not_a_short_ascii_number_is_no_route(api, db, test_id):
    response = api.post(f"/api/v1/stop_ab_test/{test_id}")
    assert response.status_code == 404 and "no API route matches" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/api/v1/abtests.json", "/api/v1/mlmodels/upload.json",
                                  "/api/v1/mlmodels.api"])
def test_format_suffixes_are_no_route(api, db, path):
    response = api.post(path, {}, format="json")
    assert response.status_code == 404 and "no API route matches" in response.json()["detail"]


def test_abtests_filter_by_running(api, ids):
    test_id = start(api, mlmodels=list(ids)).json()["id"]
    assert [t["id"] for t in api.get("/api/v1/abtests?running=true").json()["results"]] == [
        test_id]
    assert api.get("/api/v1/abtests?running=false").json()["results"] == []
    assert MLRequest.objects.count() == 0
