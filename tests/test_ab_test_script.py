"""ab_test.py against a live gunicorn: a whole A/B test from start to promotion, and failures."""
import os
import re
import sys

import pytest
import requests

from conftest import issue_token, manage, start_gunicorn
from conftest import run_ab_test as simulate
from tests.live import free_port, run_script, stop

pytestmark = pytest.mark.live


def test_start_stop_promotes_the_more_accurate_model(live_server_url):
    manage("register_models")
    run = simulate(live_server_url, "--start", "--stop", "-n", "120", "--concurrency", "4",
                   "--seed", "7", "--user-keys", token=issue_token())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sent 120 rows of adult.test, 0 failed" in run.stdout
    assert "stopped A/B test" in run.stdout
    assert "fixed-horizon z-test" in run.stdout and "always-valid mSPRT" in run.stdout

    test = requests.get(f"{live_server_url}/api/v1/abtests", timeout=60).json()["results"][0]
    assert test["state"] == "stopped"
    figures = {m["mlmodel"]: m for m in test["results"]["models"]}
    assert sum(m["requests"] for m in figures.values()) == 120
    assert all(m["feedback"] == m["requests"] for m in figures.values())
    winner = max(figures.values(), key=lambda m: (m["accuracy"], m["was_production"]))
    assert test["results"]["promoted"] == winner["mlmodel"]
    production = requests.get(f"{live_server_url}/api/v1/mlmodels?status=production",
                              timeout=60).json()["results"]
    assert [m["id"] for m in production] == [winner["mlmodel"]]
    assert f"{winner['name']} {winner['version']} is the most accurate" in run.stdout


def test_a_test_started_to_stop_itself_stops_within_its_budget(live_server_url):
    manage("register_models")
    run = simulate(live_server_url, "--start", "--policy", "significant", "--auto-stop",
                   "--max-feedback", "40", "--strategy", "thompson", "-n", "150",
                   "--concurrency", "2", "--seed", "3", token=issue_token())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "stopped itself (auto-stop" in run.stdout, run.stdout
    test = requests.get(f"{live_server_url}/api/v1/abtests", timeout=60).json()["results"][0]
    assert test["state"] == "stopped" and test["policy"] == "significant"
    assert test["strategy"] == "thompson" and test["max_feedback"] == 40
    assert test["results"]["stopped_by"].startswith("auto-stop")
    # Stopped at the feedback that reached the budget (or earlier, on significance): the
    # figures it was decided on hold no more than that.
    assert sum(m["feedback"] for m in test["results"]["models"]) <= 40
    assert test["results"]["decision"]["reason"] in run.stdout


def test_without_a_running_test_it_says_so_and_fails(live_server_url):
    manage("register_models")
    run = simulate(live_server_url, "-n", "5", token=issue_token())
    assert run.returncode == 1
    assert "no A/B test is running on endpoint 'classifier'; pass --start" in run.stderr


def test_failed_requests_are_reported_with_status_and_message(transactional_db, tmp_path):
    manage("register_models")
    port = free_port()
    server = start_gunicorn(port, ML_ARTIFACTS_DIR=str(tmp_path))  # no artifacts: 503s
    try:
        run = simulate(f"http://127.0.0.1:{port}", "--start", "-n", "6", "--concurrency", "2",
                       token=issue_token())
    finally:
        stop(server)
    assert run.returncode == 1
    assert "sent 6 rows of adult.test, 6 failed" in run.stdout
    assert "6 failed requests:" in run.stderr
    grouped = re.findall(r"(\d) x POST /classifier/predict: 503 model \d+ \((?:random forest|"
                         r"extra trees) 0.0.1\) is unavailable \(reference \w+", run.stderr)
    assert sum(map(int, grouped)) == 6, run.stderr
    assert str(tmp_path) not in run.stderr  # the path is in the server's log, not the answer


def test_without_a_token_it_says_how_to_get_one(live_server_url):
    run = simulate(live_server_url, "-n", "5")
    assert run.returncode == 2
    assert "sending feedback needs an API token: pass --token KEY or set ML_API_TOKEN" in run.stderr
    assert "manage.py api_token <username> --create-user" in run.stderr


def test_a_wrong_token_fails_with_the_servers_message(live_server_url):
    manage("register_models")
    run = simulate(live_server_url, "--start", "-n", "5", "--token", "wrong")
    assert run.returncode == 1
    assert "error: GET /mlmodels: 401 Invalid token." in run.stderr  # the first call


def test_rate_limited_requests_wait_and_are_retried(transactional_db):
    manage("register_models")
    port = free_port()
    server = start_gunicorn(port, workers=1, PREDICT_RATE="10/second")
    try:
        run = simulate(f"http://127.0.0.1:{port}", "--start", "-n", "60", "--concurrency", "6",
                       "--seed", "1", token=issue_token())
    finally:
        stop(server)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sent 60 rows of adult.test, 0 failed" in run.stdout
    assert re.search(r"rate-limited \d+ times; each waited as Retry-After said", run.stdout)


@pytest.mark.parametrize("how", ["ML_API_URL", "PORT"])
def test_it_finds_the_service_from_the_environment(live_server_url, how):
    """Without --url: $ML_API_URL, else the PORT that make run was given."""
    manage("register_models")
    env = {k: v for k, v in os.environ.items() if k not in ("ML_API_URL", "PORT")}
    env["ML_API_TOKEN"] = issue_token()
    env[how] = live_server_url if how == "ML_API_URL" else live_server_url.rsplit(":", 1)[1]
    run = run_script([sys.executable, "ab_test.py", "--start", "-n", "4"], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sent 4 rows of adult.test, 0 failed" in run.stdout
