"""The pages as HTML (Django's test client): every figure is in the page without JavaScript.
tests/test_pages_browser.py drives them in Chromium (charts, refresh, the Stop button)."""
import html
import re

import pytest
from django.contrib.auth.models import User

from apps.endpoints import predictions, services
from apps.endpoints.models import ABTest, MLModelStatus


def serve(model, labels, sample_row, status="ab_testing"):
    """Requests answered by ``model``, with ``labels`` as their feedback."""
    for label in labels:
        answered = predictions.prediction_create(endpoint_name="classifier",
                                                 input_data=sample_row, status=status,
                                                 name=model.name)
        if label:
            services.feedback_set(mlrequest=answered, feedback=label)


@pytest.fixture
def ab_test(registered, sample_row):
    rf, et = registered["random forest"], registered["extra trees"]
    test = services.ab_test_create(title="rf vs et", created_by="ann", mlmodels=[rf, et])
    serve(rf, ["<=50K"] * 3 + [">50K"], sample_row)  # the example row is <=50K: 3 of 4 right
    serve(et, ["<=50K", ">50K", None], sample_row)  # 1 of 2, one waiting
    return test


@pytest.fixture
def staff(client, db):
    client.force_login(User.objects.create_user("ops", is_staff=True))
    return client


def text(response) -> str:
    """What a person reads: no tags, entities decoded, one space between words."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ",
                                                    response.content.decode())))


def test_home_shows_each_endpoint_its_production_model_and_running_test(client, ab_test,
                                                                         registered, sample_row):
    serve(registered["random forest"], ["<=50K", ">50K"], sample_row, status="production")
    page = client.get("/")
    assert page.status_code == 200
    words = text(page)
    assert "In production: random forest 0.0.1" in words
    # Live accuracy over every request it served with feedback: 3/4 in the test + 1/2 outside.
    assert "Live accuracy: 66.7% (95% CI" in words and "6 with feedback" in words
    assert f'href="/abtests/{ab_test.pk}"' in page.content.decode()
    for link in ('href="/api/v1/"', 'href="/api/docs"', 'href="/admin/"'):
        assert link in page.content.decode()


def test_the_ab_test_page_has_every_figure_and_the_comparison_in_words(client, ab_test):
    page = client.get(f"/abtests/{ab_test.pk}")
    words = text(page)
    assert re.search(r"random forest 0\.0\.1 incumbent 1\.0 50\.0% 4 4 75\.0% "
                     r"\d+\.\d% to \d+\.\d%", words), words
    assert re.search(r"extra trees 0\.0\.1 1\.0 50\.0% 3 2 50\.0%", words)
    assert "Policy best (the most accurate model is promoted)" in words
    assert ("If stopped now: random forest 0.0.1 is the most accurate; it is promoted on a "
            "difference that is not significant") in words
    assert re.search(r"random forest 0\.0\.1 is 25\.0 points ahead of extra trees 0\.0\.1 "
                     r"\(95% CI -?\d+\.\d to \d+\.\d, p = [\d.]+\): cannot tell them apart yet",
                     words), words
    assert 'id="stop"' not in page.content.decode()  # anonymous: no Stop button
    data = client.get(f"/abtests/{ab_test.pk}/data").json()
    assert [len(s["points"]) for s in data["series"]] == [4, 2]  # a point per feedback


def test_a_stopped_test_charts_the_feedback_it_was_decided_on(staff, client, ab_test):
    staff.post(f"/abtests/{ab_test.pk}/stop")
    waiting = ab_test.requests.get(feedback__isnull=True)  # the extra trees' third request
    services.feedback_set(mlrequest=waiting, feedback="<=50K")  # arrives after the stop
    data = client.get(f"/abtests/{ab_test.pk}/data").json()
    assert [len(s["points"]) for s in data["series"]] == [4, 2]
    assert [m["feedback"] for m in data["models"]] == [4, 2]  # the frozen table agrees


def test_a_stopped_test_whose_row_holds_no_figures_shows_them_from_its_requests(
        staff, client, ab_test):
    staff.post(f"/abtests/{ab_test.pk}/stop")
    ABTest.objects.filter(pk=ab_test.pk).update(results={})  # a row edited by hand, or older
    assert client.get(f"/abtests/{ab_test.pk}").status_code == 200
    data = client.get(f"/abtests/{ab_test.pk}/data").json()
    assert data["state"] == "stopped" and [m["feedback"] for m in data["models"]] == [4, 2]


def test_only_staff_see_and_use_the_stop_button(client, staff, ab_test, django_user_model):
    assert 'id="stop"' in staff.get(f"/abtests/{ab_test.pk}").content.decode()
    plain = django_user_model.objects.create_user("visitor")
    client.force_login(plain)
    assert 'id="stop"' not in client.get(f"/abtests/{ab_test.pk}").content.decode()
    assert client.post(f"/abtests/{ab_test.pk}/stop").status_code == 403
    client.logout()
    assert client.post(f"/abtests/{ab_test.pk}/stop").status_code == 403
    assert ABTest.objects.get().ended_at is None


def test_a_stop_from_the_page_promotes_as_the_api_would(staff, ab_test, registered):
    response = staff.post(f"/abtests/{ab_test.pk}/stop", follow=True)
    words = text(response)
    assert ("A/B test stopped: random forest 0.0.1 is the most accurate; it is promoted on a "
            "difference that is not significant") in words
    assert "Decision" in words and "status changes: random forest 0.0.1 -> production" in words
    assert 'id="stop"' not in response.content.decode()
    active = dict(MLModelStatus.objects.filter(active=True).values_list("mlmodel__name", "status"))
    assert active == {"random forest": "production", "extra trees": "testing"}
    assert ABTest.objects.get().results["stopped_by"] == "ops"
    again = staff.post(f"/abtests/{ab_test.pk}/stop", follow=True)
    assert "was already stopped" in text(again)


def test_the_model_page_shows_history_offline_and_live_accuracy(client, ab_test, registered):
    rf = registered["random forest"]
    page = client.get(f"/models/{rf.pk}")
    words = text(page)
    assert "offline (adult.test) 86.2%" in words
    assert "live (from feedback) 75.0%" in words and "4 with feedback" in words
    assert re.search(r"ab_testing yes ann .* production no register_models", words), words
    days = client.get(f"/models/{rf.pk}/data").json()["days"]
    assert len(days) == 1 and days[0]["requests"] == 4 and days[0]["accuracy"] == 0.75


def test_the_api_links_each_test_and_model_to_its_page(api, ab_test, registered):
    test = api.get(f"/api/v1/abtests/{ab_test.pk}").json()
    assert test["page"] == f"http://testserver/abtests/{ab_test.pk}"
    model = api.get(f"/api/v1/mlmodels/{registered['extra trees'].pk}").json()
    assert model["page"] == f"http://testserver/models/{registered['extra trees'].pk}"


def test_unknown_pages_are_404(client, db):
    assert client.get("/abtests/999").status_code == 404
    assert client.get("/models/999").status_code == 404
