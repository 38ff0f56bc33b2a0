"""Who may do what: reads and predictions are open; every write needs a token or a staff user.

And predict's per-client rate limit: a budget per token user or per address, 429 with
Retry-After beyond it, nothing stored for a refused request.
"""
import json
import logging
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.endpoints import predictions, services, throttling
from apps.endpoints.models import ABTest, Endpoint, MLModel, MLModelStatus, MLRequest
from apps.endpoints.throttling import check_predict_rate, parse_rate

PREDICT = "/api/v1/classifier/predict"


@pytest.fixture
def world(registered, sample_row):
    """Something for every write to succeed on: a served request on the classifier, and a
    running A/B test with feedback for both its models on a second endpoint."""
    rf = registered["random forest"]
    churn = services.endpoint_create(name="churn", owner="ann")
    arms = [services.mlmodel_create(endpoint=churn, name=name, version="1", code=rf.code,
                                    owner="ann", artifact_path=rf.artifact_path)
            for name in ("a", "b")]
    ab_test = services.ab_test_create(title="a vs b", created_by="ann", mlmodels=arms)
    for arm in arms:
        answered = predictions.prediction_create(endpoint_name="churn", input_data=sample_row,
                                                 status="ab_testing", name=arm.name)
        services.feedback_set(mlrequest=answered, feedback="<=50K")
    served = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    return {"request": served.pk, "test": ab_test.pk, "rf": rf.pk,
            "et": registered["extra trees"].pk,
            "new_model": {"endpoint": rf.endpoint_id, "name": rf.name, "version": "9.9.9",
                          "code": rf.code, "owner": "x", "artifact_path": rf.artifact_path}}


WRITES = {
    "create endpoint": ("post", "/api/v1/endpoints", lambda w: {"name": "spam", "owner": "x"}),
    "register model": ("post", "/api/v1/mlmodels", lambda w: w["new_model"]),
    "set status": ("post", "/api/v1/mlmodelstatuses", lambda w: {
        "mlmodel": w["et"], "status": "production", "created_by": "x"}),
    "start test": ("post", "/api/v1/abtests", lambda w: {
        "title": "again", "created_by": "x", "mlmodels": [w["rf"], w["et"]]}),
    "stop test": ("post", "/api/v1/stop_ab_test/{test}", lambda w: {"stopped_by": "x"}),
    "put feedback": ("put", "/api/v1/mlrequests/{request}", lambda w: {"feedback": ">50K"}),
    "patch feedback": ("patch", "/api/v1/mlrequests/{request}", lambda w: {"feedback": ">50K"}),
}


def write(client, world, name):
    method, path, body = WRITES[name]
    return getattr(client, method)(path.format(**world), body(world), format="json")


def registry_state():
    return (Endpoint.objects.count(), MLModel.objects.count(),
            list(MLModelStatus.objects.filter(active=True).values_list("mlmodel", "status")),
            list(ABTest.objects.values_list("pk", "ended_at")),
            list(MLRequest.objects.values_list("pk", "feedback")))


@pytest.mark.parametrize("name", WRITES)
def test_anonymous_writes_are_401_and_change_nothing(anon, world, name):
    before = registry_state()
    response = write(anon, world, name)
    assert response.status_code == 401, response.json()
    assert response["WWW-Authenticate"] == "Token"
    assert "needs an API token (header 'Authorization: Token <key>'" in response.json()["detail"]
    assert registry_state() == before


@pytest.mark.parametrize("name", WRITES)
def test_a_token_may_make_every_write(api, world, name):
    response = write(api, world, name)
    assert response.status_code in (200, 201), response.json()


def test_a_signed_in_user_who_is_not_staff_gets_403(anon, world):
    anon.force_login(User.objects.create_user("visitor", password="pw"))
    before = registry_state()
    response = write(anon, world, "set status")
    assert response.status_code == 403
    assert "changing the registry or recording feedback needs" in response.json()["detail"]
    assert registry_state() == before


def test_a_staff_session_may_change_the_registry(anon, world):
    anon.force_login(User.objects.create_user("ops", password="pw", is_staff=True))
    assert write(anon, world, "stop test").status_code == 200
    assert write(anon, world, "set status").status_code == 201


def test_reads_and_predictions_are_open(anon, world, sample_row):
    for path in ("/api/v1/endpoints", "/api/v1/mlmodels", "/api/v1/mlmodelstatuses",
                 "/api/v1/mlrequests", f"/api/v1/mlrequests/{world['request']}",
                 "/api/v1/abtests", f"/api/v1/abtests/{world['test']}"):
        assert anon.get(path).status_code == 200, path
    assert anon.post(PREDICT, sample_row, format="json").status_code == 200


@pytest.mark.parametrize("path", [PREDICT, "/api/v1/mlrequests/{request}"])
def test_a_wrong_token_is_401_even_where_none_is_needed(world, sample_row, path):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    response = client.post(path.format(**world), sample_row, format="json")
    assert response.status_code == 401 and response.json()["detail"] == "Invalid token."


def test_a_key_that_cannot_be_a_token_is_401(world, sample_row):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token a\x00b")  # PostgreSQL refuses NUL in text
    response = client.post(PREDICT, sample_row, format="json")
    assert response.status_code == 401 and "Invalid token" in response.json()["detail"]


# A quoted octal escape is a NUL once Django parses the cookie (the header itself is ASCII).
def test_a_session_cookie_that_cannot_be_a_key_is_no_session(client, world):
    for path in ("/", "/api/v1/mlmodels", "/admin/login/"):
        assert client.get(path, HTTP_COOKIE='sessionid="aaaaaaaa\\000"').status_code == 200, path


def test_an_inactive_users_token_is_refused(api, api_token, world):
    User.objects.filter(auth_token__key=api_token).update(is_active=False)
    assert write(api, world, "put feedback").status_code == 401


# --- the rate limit ---------------------------------------------------------------------------

def predict(client, row, **extra):
    return client.post(PREDICT, data=json.dumps(row), content_type="application/json", **extra)


def test_past_its_budget_a_client_gets_429_with_retry_after_and_nothing_stored(
        anon, registered, sample_row, settings):
    settings.PREDICT_RATE = "3/day"
    assert [predict(anon, sample_row).status_code for _ in range(3)] == [200, 200, 200]
    refused = predict(anon, sample_row)
    assert refused.status_code == 429
    assert "Request was throttled" in refused.json()["detail"]
    assert 0 < int(refused["Retry-After"]) <= 86400
    assert MLRequest.objects.count() == 3


def test_each_client_has_its_own_budget(anon, api, registered, sample_row, settings):
    settings.PREDICT_RATE = "2/day"
    for _ in range(2):
        predict(anon, sample_row)
    assert predict(anon, sample_row).status_code == 429
    # Another address, and a token user (counted by user, wherever it calls from), still pass.
    assert predict(anon, sample_row, REMOTE_ADDR="10.0.0.7").status_code == 200
    assert predict(api, sample_row).status_code == 200


def test_behind_a_proxy_the_client_is_the_address_the_proxy_saw(anon, registered, sample_row,
                                                                  settings):
    settings.PREDICT_RATE = "1/day"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    # nginx appends the address it saw; whatever the client put before it does not count.
    assert predict(anon, sample_row, HTTP_X_FORWARDED_FOR="1.1.1.1, 10.0.0.1").status_code == 200
    assert predict(anon, sample_row, HTTP_X_FORWARDED_FOR="2.2.2.2, 10.0.0.1").status_code == 429
    assert predict(anon, sample_row, HTTP_X_FORWARDED_FOR="10.0.0.2").status_code == 200


def test_without_a_proxy_a_forged_forwarded_for_does_not_escape(anon, registered, sample_row,
                                                                 settings):
    settings.PREDICT_RATE = "1/day"
    assert predict(anon, sample_row, HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 200
    assert predict(anon, sample_row, HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 429


@pytest.mark.parametrize("client_fixture, queries", [("anon", 2), ("api", 3)])
def test_the_limit_and_the_credentials_cost_no_query_but_the_token_lookup(
        request, registered, sample_row, django_assert_num_queries, client_fixture, queries):
    client = request.getfixturevalue(client_fixture)
    predict(client, sample_row)  # loads the model
    # The service's SELECT + INSERT; a token adds its own lookup; the counter is in the cache.
    with django_assert_num_queries(queries):
        assert predict(client, sample_row).status_code == 200


def test_off_means_no_limit(anon, registered, sample_row, settings):
    settings.PREDICT_RATE = "off"
    assert {predict(anon, sample_row).status_code for _ in range(60)} == {200}


@pytest.fixture
def unreachable_cache(settings, monkeypatch):
    """Redis at a port nothing listens on, and a fresh breaker that counts its connections."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    settings.CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
    now = [0.0]
    monkeypatch.setattr(throttling, "breaker", throttling.CacheBreaker(30, clock=lambda: now[0]))
    tries = []
    real_add = RedisCache.add
    monkeypatch.setattr(RedisCache, "add", lambda *a, **k: tries.append(1) or real_add(*a, **k))
    yield tries, now
    caches["default"].close()


def test_an_unreachable_cache_serves_predictions_and_warns_once(anon, registered, sample_row,
                                                                settings, caplog,
                                                                unreachable_cache):
    settings.PREDICT_RATE = "1/day"
    with caplog.at_level(logging.INFO, logger="apps.endpoints.throttling"):
        assert [predict(anon, sample_row).status_code for _ in range(5)] == [200] * 5
    warnings = [r for r in caplog.records if r.name == "apps.endpoints.throttling"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "the cache is unreachable (ConnectionError" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # a line, not a traceback
    assert len(unreachable_cache[0]) == 1  # the others did not wait for the timeout


def test_the_cache_is_tried_again_after_the_interval(anon, registered, sample_row, settings,
                                                     unreachable_cache):
    tries, now = unreachable_cache
    settings.PREDICT_RATE = "1/day"
    predict(anon, sample_row)
    now[0] = 29.0
    predict(anon, sample_row)
    assert len(tries) == 1
    now[0] = 31.0
    predict(anon, sample_row)
    assert len(tries) == 2


@pytest.mark.parametrize("text, parsed", [
    ("50/second", (50, 1)), ("50/s", (50, 1)), ("600/minute", (600, 60)), ("1/hour", (1, 3600)),
    ("7 / days", (7, 86400)), ("off", None), ("", None), ("OFF", None),
])
def test_parse_rate(text, parsed):
    assert parse_rate(text) == parsed


@pytest.mark.parametrize("text", ["50", "fifty/second", "50/fortnight", "0/second", "-1/s"])
def test_a_bad_rate_is_named_by_the_system_check(text, settings):
    with pytest.raises(ImproperlyConfigured, match="is not a rate: write <requests>/<period>"):
        parse_rate(text)
    settings.PREDICT_RATE = text
    [error] = check_predict_rate(None)
    assert error.id == "endpoints.E001" and f"PREDICT_RATE={text!r}" in error.msg


# --- the token command ------------------------------------------------------------------------

def token(*args):
    out, err = StringIO(), StringIO()
    call_command("api_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_the_command_creates_a_passwordless_user_and_prints_only_the_key(db):
    key, said = token("alice", "--create-user")
    user = User.objects.get(username="alice")
    assert Token.objects.get(user=user).key == key and len(key) == 40
    assert not user.has_usable_password() and not user.is_staff
    assert "created user 'alice'" in said and "new API token for 'alice'" in said
    assert token("alice") == (key, "")  # the same key again, and nothing created


def test_rotate_replaces_the_key_and_the_old_one_stops_working(world):
    old, _ = token("bob", "--create-user")
    new, _ = token("bob", "--rotate")
    assert new != old
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert client.put(f"/api/v1/mlrequests/{world['request']}", {"feedback": ">50K"},
                      format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert client.put(f"/api/v1/mlrequests/{world['request']}", {"feedback": ">50K"},
                      format="json").status_code == 200


@pytest.mark.parametrize("args, message", [
    (["nobody"], "no user 'nobody': pass --create-user to create one"),
    (["bad name!", "--create-user"], "'bad name!' is not a valid username"),
    (["", "--create-user"], "the username is empty"),
])
def test_the_command_names_what_is_wrong(db, args, message):
    with pytest.raises(CommandError, match=message):
        token(*args)
    assert not Token.objects.exists()


def test_the_command_refuses_an_inactive_user(db):
    User.objects.create_user("gone", is_active=False)
    with pytest.raises(CommandError, match="user 'gone' is inactive"):
        token("gone")
