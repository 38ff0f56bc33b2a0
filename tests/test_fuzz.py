"""The API as an outsider attacks it: over real HTTP, gunicorn with DEBUG off, a token in hand.

- schemathesis (pinned in requirements-dev.txt) generates requests from the OpenAPI schema,
  valid and invalid, stateful sequences included: none may get a 5xx, and every response must be
  what the schema documents (status code, content type, body, headers, the Allow header of 405s).
  Its seed is random unless FUZZ_SEED is set; a failure prints the seed and the curl to replay.
- each hostile input of tests/hostile_inputs.py is a JSON 4xx naming the field; nothing stored.

CI runs both on SQLite and on PostgreSQL (the suite runs once on each).
"""
import os
import random
import sys
from pathlib import Path

import pytest
import requests

from conftest import issue_token, manage, start_gunicorn
from tests.hostile_inputs import CASES
from tests.live import free_port, run_script, stop

pytestmark = [pytest.mark.live, pytest.mark.production]

MIN_REQUESTS = 1000
# Not asked of the service: these two check that the API's validation is exactly the schema's,
# and django-filter deliberately ignores an empty, null or repeated filter value ("no filter").
NOT_CHECKED = "positive_data_acceptance,negative_data_rejection"


@pytest.fixture
def server(transactional_db, tmp_path):
    manage("register_models")
    port, access = free_port(), tmp_path / "access.log"
    process = start_gunicorn(port, accesslog=str(access), PREDICT_RATE="off")
    try:
        yield {"url": f"http://127.0.0.1:{port}", "access": access, "token": issue_token()}
    finally:
        stop(process)


def test_schemathesis_finds_no_5xx_and_no_response_outside_the_schema(server, tmp_path):
    seed = int(os.environ.get("FUZZ_SEED") or random.randrange(1, 10**6))
    run = run_script(
        [str(Path(sys.executable).with_name("st")), "--no-color", "run",
         f"{server['url']}/api/schema/?format=json",
         "--header", f"Authorization: Token {server['token']}",
         "--checks", "all", "--exclude-checks", NOT_CHECKED,
         "--max-examples", "80", "--seed", str(seed), "--workers", "2",
         "--request-timeout", "60", "--generation-database", "none"],
        cwd=tmp_path, timeout=900)
    summary = run.stdout[-6000:]
    assert run.returncode == 0, f"schemathesis failed with seed {seed} (FUZZ_SEED={seed} " \
                                f"replays it):\n{run.stdout[-20000:]}\n{run.stderr[-3000:]}"
    sent = server["access"].read_text().count(" /api/")  # not the start-up's health checks
    assert sent >= MIN_REQUESTS, f"only {sent} requests were sent:\n{summary}"
    print(f"\nschemathesis (seed {seed}): {sent} requests, no failure")


def test_every_hostile_input_is_a_json_4xx_over_http(server):
    url, auth = server["url"], {"Authorization": f"Token {server['token']}"}
    models = requests.get(f"{url}/api/v1/mlmodels", timeout=30).json()["results"]
    ids = [m["id"] for m in models]

    def stored():
        return [requests.get(f"{url}/api/v1/{route}", timeout=30).json()["count"]
                for route in ("mlrequests", "mlmodels", "abtests")]

    before, wrong = stored(), []
    for case in CASES:
        headers = {"Content-Type": case.content_type, **(auth if case.token else {})}
        response = requests.request(case.method, url + case.path, headers=headers, timeout=60,
                                    data=case.payload(models[0]["endpoint"], ids))
        try:
            detail = response.json()["detail"]
            json_body = response.headers["Content-Type"] == "application/json"
        except (ValueError, KeyError):
            detail, json_body = response.text[:200], False
        if response.status_code != case.status or not json_body or case.fragment not in detail:
            wrong.append(f"{case.id}: {response.status_code} {detail[:200]!r}")
    assert wrong == []
    assert stored() == before
