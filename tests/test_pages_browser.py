"""The pages in a real browser: Debian's Chromium driven by Playwright, through nginx (which
serves the static files, the vendored Chart.js among them) in front of gunicorn with DEBUG off.

What a person sees: the chart drawn with one series per model and a point per feedback, the
figures the API reports, figures that refresh by themselves while the test runs, and a Stop
button that only staff get and that promotes as the API would. A failing test leaves a
screenshot of its page in test-results/ (pytest.ini).
"""
import os
import re
import shutil

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User

from apps.endpoints import predictions, services
from apps.endpoints.models import MLModel
from conftest import manage, start_gunicorn
from tests.live import LIVE_DEADLINE, free_port, start_nginx, stop

pytestmark = [pytest.mark.live, pytest.mark.production]

# The test process writes to the database while Playwright's event loop runs in it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
if not CHROMIUM or not shutil.which("nginx"):
    reason = "needs Debian's chromium and nginx (apt-get install chromium nginx-light)"
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run the browser tests: {reason}")
    pytest.skip(reason, allow_module_level=True)

PASSWORD = "a-staff-password-for-tests"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium, not a downloaded one, without the background traffic this closed
    network refuses."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync"]}


@pytest.fixture
def site(transactional_db, tmp_path):
    static = tmp_path / "static"
    manage("collectstatic", "--noinput", "--verbosity", "0", STATIC_ROOT=str(static))
    manage("register_models")
    app_port, nginx_port = free_port(), free_port()
    started = [start_gunicorn(app_port, workers=2)]
    try:
        started.append(start_nginx(tmp_path, nginx_port, upstream=f"127.0.0.1:{app_port}",
                                   static_root=static,
                                   max_body_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
        yield f"http://127.0.0.1:{nginx_port}"
    finally:
        for process in reversed(started):
            stop(process)


@pytest.fixture
def page(page):
    page.set_default_timeout(LIVE_DEADLINE * 1000)
    return page


def serve(model, labels, sample_row):
    for label in labels:
        answered = predictions.prediction_create(endpoint_name="classifier",
                                                 input_data=sample_row, status="ab_testing",
                                                 name=model.name)
        services.feedback_set(mlrequest=answered, feedback=label)


@pytest.fixture
def ab_test(site, sample_row):
    rf, et = MLModel.objects.get(name="random forest"), MLModel.objects.get(name="extra trees")
    test = services.ab_test_create(title="rf vs et", created_by="ann", mlmodels=[rf, et])
    serve(rf, ["<=50K"] * 5 + [">50K"], sample_row)
    serve(et, ["<=50K", ">50K", ">50K"], sample_row)
    return test


def chart_series(page) -> list[dict]:
    return page.evaluate("""() => {
        const chart = Chart.getChart(document.getElementById("accuracy-chart"));
        return chart.data.datasets.filter((d) => d.kind === "accuracy")
                    .map((d) => ({label: d.label, points: d.data.length}));
    }""")


def drawn(page, canvas: str) -> bool:
    """Whether anything was painted on the canvas."""
    return page.evaluate("""(id) => {
        const c = document.getElementById(id);
        const pixels = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        return pixels.some((value, i) => i % 4 === 3 && value > 0);
    }""", canvas)


def pct(x) -> str:
    return f"{100 * x:.1f}%"


def test_the_chart_and_the_figures_match_the_api(page, site, ab_test):
    api = requests.get(f"{site}/api/v1/abtests/{ab_test.pk}", timeout=60).json()
    assert api["page"] == f"{site}/abtests/{ab_test.pk}"  # the API links to the page
    page.goto(api["page"])
    assert drawn(page, "accuracy-chart")
    assert chart_series(page) == [{"label": f"{m['name']} {m['version']}",
                                   "points": m["feedback"]} for m in api["results"]["models"]]
    for m in api["results"]["models"]:
        row = page.locator(f'tr[data-model="{m["mlmodel"]}"]')
        assert row.locator(".requests").inner_text() == str(m["requests"])
        assert row.locator(".feedback").inner_text() == str(m["feedback"])
        assert row.locator(".accuracy").inner_text() == pct(m["accuracy"])
        assert row.locator(".ci").inner_text() == f"{pct(m['ci95'][0])} to {pct(m['ci95'][1])}"
    assert "cannot tell them apart yet" in page.locator("#comparisons").inner_text()
    assert page.locator("#stop").count() == 0  # anonymous: no Stop button


def test_the_page_refreshes_its_figures_while_the_test_runs(page, site, ab_test, sample_row):
    page.goto(f"{site}/abtests/{ab_test.pk}")
    et = MLModel.objects.get(name="extra trees")
    feedback = page.locator(f'tr[data-model="{et.pk}"] .feedback')
    assert feedback.inner_text() == "3"
    serve(et, ["<=50K", "<=50K"], sample_row)
    page.wait_for_function(
        f"""() => document.querySelector('tr[data-model="{et.pk}"] .feedback')
                          .textContent === "5" """)
    assert {s["points"] for s in chart_series(page) if s["label"].startswith("extra")} == {5}


def test_staff_stop_the_test_from_its_page_as_the_api_would(page, site, ab_test):
    User.objects.create_user("ops", password=PASSWORD, is_staff=True)
    before = requests.get(f"{site}/api/v1/abtests/{ab_test.pk}", timeout=60).json()
    leader = before["results"]["leader"]
    page.goto(f"{site}/admin/login/?next=/abtests/{ab_test.pk}")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(rf"/abtests/{ab_test.pk}$"))
    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.click("#stop")
    page.wait_for_selector("text=A/B test stopped")
    assert dialogs and "apply its policy (best) to production" in dialogs[0]
    assert page.locator("#stop").count() == 0
    assert "status changes:" in page.locator(".decision").inner_text()
    after = requests.get(f"{site}/api/v1/abtests/{ab_test.pk}", timeout=60).json()
    assert after["state"] == "stopped" and after["results"]["promoted"] == leader
    production = requests.get(f"{site}/api/v1/mlmodels?status=production", timeout=60).json()
    assert [m["id"] for m in production["results"]] == [leader]


def test_home_leads_to_the_model_page_and_its_chart(page, site, ab_test):
    page.goto(site + "/")
    page.click("text=random forest 0.0.1")
    page.wait_for_selector("#days-chart")
    assert drawn(page, "days-chart")
    bars = page.evaluate("""() => Chart.getChart(document.getElementById("days-chart"))
                                       .data.datasets.map((d) => d.data.length)""")
    assert bars == [1, 1]  # requests and accuracy, on the one day the test ran
    assert "live (from feedback)" in page.inner_text("body")
