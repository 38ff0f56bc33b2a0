"""Webhooks: events written with the change they report, delivered signed, retried, never lost."""
import hashlib
import hmac
import http.server
import json
import socket
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command

from apps.endpoints import predictions, services
from apps.endpoints.exceptions import Conflict
from apps.webhooks import services as webhooks
from apps.webhooks.models import Attempt, Delivery, Event, Subscriber


class Receiver:
    """A local HTTP server standing in for a subscriber: answers each POST with the next status
    of ``statuses`` (the last one from then on) and keeps what it received."""

    def __init__(self, statuses=(200,), port=0):
        self.statuses, self.received = list(statuses), []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 \
                    else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=(200,), port=0):
        made.append(Receiver(statuses, port))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture(autouse=True)
def local_receivers(settings):
    """The receivers here listen on loopback, which subscribers may only use when allowed."""
    settings.WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def subscribe(registered):
    endpoint = registered["random forest"].endpoint

    def subscribe(url, **kwargs):
        return webhooks.subscriber_create(endpoint=endpoint, url=url, created_by="ann", **kwargs)

    return subscribe


def promote(registered, name="extra trees"):
    services.mlmodel_status_set(mlmodel=registered[name], status="production", created_by="ann")


def test_a_promotion_is_recorded_with_a_delivery_for_each_active_subscriber(registered,
                                                                          subscribe):
    first, second = subscribe("http://a.example/hook"), subscribe("http://b.example/hook")
    Subscriber.objects.filter(pk=subscribe("http://c.example/hook").pk).update(active=False)
    promote(registered)
    event = Event.objects.get()
    et, rf = registered["extra trees"], registered["random forest"]
    assert event.type == "model.promoted"
    assert event.data == {
        "model": {"id": et.pk, "name": "extra trees", "version": "0.0.1"},
        "archived": [{"id": rf.pk, "name": "random forest", "version": "0.0.1"}],
        "ab_test": None, "by": "ann"}
    assert {d.subscriber for d in Delivery.objects.all()} == {first, second}


def test_without_subscribers_nothing_is_recorded(registered):
    promote(registered)
    assert Event.objects.count() == 0


def test_a_change_that_does_not_commit_tells_nobody(registered, subscribe):
    subscribe("http://a.example/hook")
    test = services.ab_test_create(title="t", created_by="ann", mlmodels=list(registered.values()))
    with pytest.raises(Conflict, match="no feedback"):
        services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")  # rolls back
    assert list(Event.objects.values_list("type", flat=True)) == ["abtest.started"]


def test_starting_and_stopping_a_test_are_told(registered, subscribe, sample_row):
    subscribe("http://a.example/hook")
    models = list(registered.values())
    test = services.ab_test_create(title="rf vs et", created_by="ann", mlmodels=models)
    for model in models:  # the challenger right, the incumbent wrong: the challenger wins
        answered = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                                 status="ab_testing", name=model.name)
        wrong = next(c for c in model.classes if c != answered.response)
        services.feedback_set(mlrequest=answered, feedback=wrong if model.name == "random forest"
                              else answered.response)
    services.ab_test_stop(ab_test_id=test.pk, stopped_by="bob")
    events = {e.type: e.data for e in Event.objects.all()}
    assert set(events) == {"abtest.started", "model.promoted", "abtest.stopped"}
    assert events["model.promoted"]["model"]["name"] == "extra trees"
    assert events["abtest.started"]["ab_test"] == {"id": test.pk, "title": "rf vs et"}
    assert [m["weight"] for m in events["abtest.started"]["models"]] == [1.0, 1.0]
    assert events["abtest.stopped"]["promoted"] == events["model.promoted"]["model"]
    assert events["model.promoted"]["ab_test"] == {"id": test.pk, "title": "rf vs et"}
    assert events["abtest.stopped"]["by"] == "bob" and "summary" in events["abtest.stopped"]
    assert "not significant" in events["abtest.stopped"]["decision"]


def test_an_incumbent_that_keeps_production_is_no_promotion(registered, subscribe, sample_row):
    subscribe("http://a.example/hook")
    models = list(registered.values())
    test = services.ab_test_create(title="rf vs et", created_by="ann", mlmodels=models)
    for model in models:
        answered = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                                 status="ab_testing", name=model.name)
        services.feedback_set(mlrequest=answered, feedback=answered.response)
    services.ab_test_stop(ab_test_id=test.pk, stopped_by="bob")
    events = {e.type: e.data for e in Event.objects.all()}
    assert set(events) == {"abtest.started", "abtest.stopped"}
    assert events["abtest.stopped"]["promoted"]["name"] == "random forest"  # it won, and kept


def test_a_delivery_is_signed_with_the_subscribers_secret(registered, subscribe, receiver):
    hook = receiver()
    subscriber = subscribe(hook.url)
    promote(registered)
    assert webhooks.deliver_due() == 1
    (headers, body), = hook.received
    timestamp, signature = (part.split("=", 1)[1]
                            for part in headers["X-Webhook-Signature"].split(","))
    expected = hmac.new(subscriber.secret.encode(), f"{timestamp}.".encode() + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    assert headers["X-Webhook-Event"] == "model.promoted"
    delivery = Delivery.objects.get()
    assert headers["X-Webhook-Delivery"] == str(delivery.pk)
    assert json.loads(body) == webhooks.envelope(Event.objects.get())
    assert json.loads(body)["type"] == "model.promoted"
    assert (delivery.state, delivery.attempts) == ("delivered", 1)
    assert list(Attempt.objects.values_list("status_code", "error")) == [(200, "")]


def test_a_receiver_that_fails_first_gets_the_event_on_a_later_try(registered, subscribe,
                                                                   receiver):
    hook = receiver(statuses=[500, 503, 200])
    subscribe(hook.url)
    promote(registered)
    for expected_attempts in (1, 2):
        assert webhooks.deliver_due() == 1
        delivery = Delivery.objects.get()
        assert (delivery.state, delivery.attempts) == ("pending", expected_attempts)
        assert webhooks.deliver_due() == 0  # not due again before its backoff
        webhooks.delivery_retry_now(delivery=delivery)
    assert webhooks.deliver_due() == 1
    assert Delivery.objects.get().state == "delivered"
    assert list(Attempt.objects.values_list("status_code", flat=True)) == [500, 503, 200]
    assert len(hook.received) == 3 and len({body for _, body in hook.received}) == 1


def test_a_receiver_that_is_down_loses_nothing(registered, subscribe, receiver):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    subscribe(f"http://127.0.0.1:{port}/hook")  # nothing listens there yet
    promote(registered)
    assert webhooks.deliver_due() == 1
    attempt = Attempt.objects.get()
    assert attempt.status_code is None and "ConnectionError" in attempt.error
    hook = receiver(port=port)  # it comes back, where it was
    webhooks.delivery_retry_now(delivery=Delivery.objects.get())
    call_command("deliver_webhooks", "--once")
    assert Delivery.objects.get().state == "delivered" and len(hook.received) == 1


def test_backoff_doubles_up_to_its_cap(settings):
    settings.WEBHOOK_BACKOFF, settings.WEBHOOK_MAX_BACKOFF = 5, 60
    waits = [webhooks.backoff(n) for n in range(1, 8)]
    assert all(timedelta(seconds=4) <= w <= timedelta(seconds=6) for w in waits[:1])
    assert all(timedelta(seconds=32) <= w <= timedelta(seconds=48) for w in waits[3:4])
    assert all(w <= timedelta(seconds=72) for w in waits[4:])


def test_subscribers_need_a_token_and_the_secret_is_shown_once(anon, api, registered):
    endpoint = registered["random forest"].endpoint_id
    body = {"endpoint": endpoint, "url": "https://93.184.216.34/ml"}
    assert anon.post("/api/v1/subscribers", body, format="json").status_code == 401
    created = api.post("/api/v1/subscribers", body, format="json")
    assert created.status_code == 201 and len(created.json()["secret"]) >= 32
    assert anon.get("/api/v1/subscribers").status_code == 401
    listed = api.get("/api/v1/subscribers").json()["results"]
    assert [s["url"] for s in listed] == ["https://93.184.216.34/ml"]
    assert "secret" not in listed[0]
    paused = api.post("/api/v1/subscribers", {**body, "active": False, "secret": "s" * 20},
                      format="json")
    assert paused.status_code == 201 and paused.json()["active"] is False
    assert Subscriber.objects.get(pk=paused.json()["id"]).secret == "s" * 20
    refused = api.post("/api/v1/subscribers", {**body, "url": "not a url"}, format="json")
    assert refused.status_code == 400 and refused.json()["detail"].startswith("url:")


@pytest.mark.live
def test_the_worker_delivers_in_a_process_of_its_own_and_stops_on_sigterm(transactional_db,
                                                                         receiver, tmp_path):
    """manage.py deliver_webhooks, as compose runs it, against the test database."""
    import signal
    import sys

    from conftest import SERVER_DIR, server_env
    from tests.live import LIVE_DEADLINE, spawn, stop, wait_until

    call_command("register_models", stdout=open("/dev/null", "w"))
    from apps.endpoints.models import MLModel

    hook = receiver(statuses=[500, 200])
    endpoint = MLModel.objects.first().endpoint
    webhooks.subscriber_create(endpoint=endpoint, url=hook.url, created_by="ann")
    log = open(tmp_path / "worker.log", "w")
    worker = spawn([sys.executable, "manage.py", "deliver_webhooks", "--interval", "0.2"],
                   cwd=SERVER_DIR, env=server_env(WEBHOOK_BACKOFF="0.5", WEBHOOK_ALLOW_PRIVATE="1"),
                   stdout=log, stderr=log)
    try:
        services.mlmodel_status_set(mlmodel=MLModel.objects.get(name="extra trees"),
                                    status="production", created_by="ann")
        wait_until(lambda: len(hook.received) == 2, "the event delivered on its second try")
        wait_until(lambda: Delivery.objects.get().state == "delivered", "the delivery recorded")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=LIVE_DEADLINE) == 0
    finally:
        stop(worker)
        log.close()
    assert list(Attempt.objects.values_list("status_code", flat=True)) == [500, 200]


@pytest.mark.parametrize("url", ["http://127.0.0.1:5432/", "http://169.254.169.254/latest/",
                                 "http://10.0.0.5/hook", "http://[::1]/hook",
                                 "http://192.168.1.1/", "ftp://93.184.216.34/",
                                 "http://[::1", "http://93.184.216.34:99999/",
                                 "http://93.184.216.34:0/"])
def test_subscribers_go_to_public_addresses_only(api, registered, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = api.post("/api/v1/subscribers", {
        "endpoint": registered["random forest"].endpoint_id, "url": url}, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith("url:")
    assert Subscriber.objects.count() == 0


def test_a_private_address_is_refused_at_delivery_too(registered, subscribe, receiver,
                                                      settings):
    hook = receiver()
    subscribe(hook.url)
    promote(registered)
    settings.WEBHOOK_ALLOW_PRIVATE = False  # turned off after the subscriber was saved
    webhooks.deliver_due()
    assert hook.received == [] and "is not a public address" in Attempt.objects.get().error


def test_a_paused_subscriber_keeps_its_deliveries_for_later(registered, subscribe, receiver):
    hook = receiver()
    subscriber = subscribe(hook.url)
    promote(registered)
    Subscriber.objects.filter(pk=subscriber.pk).update(active=False)
    assert webhooks.deliver_due() == 0 and Delivery.objects.get().state == "pending"
    Subscriber.objects.filter(pk=subscriber.pk).update(active=True)
    assert webhooks.deliver_due() == 1 and len(hook.received) == 1


def test_a_subscriber_with_deliveries_is_paused_not_deleted(api, registered, subscribe):
    subscriber = subscribe("http://93.184.216.34/hook")
    promote(registered)
    response = api.delete(f"/api/v1/subscribers/{subscriber.pk}")
    assert response.status_code == 409 and "pause it" in response.json()["detail"]
    assert Delivery.objects.count() == 1
    fresh = subscribe("http://93.184.216.35/hook")
    assert api.delete(f"/api/v1/subscribers/{fresh.pk}").status_code == 204


def test_a_worker_whose_lease_ran_out_does_not_overwrite_the_record(registered, subscribe,
                                                                    receiver, monkeypatch):
    hook = receiver()
    subscribe(hook.url)
    promote(registered)
    real_post = webhooks._post

    def slow_post(delivery):  # meanwhile the lease ran out and another worker took it
        Delivery.objects.filter(pk=delivery.pk).update(lease="another-worker")
        return real_post(delivery)

    monkeypatch.setattr(webhooks, "_post", slow_post)
    assert webhooks.deliver_one()
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.attempts, delivery.lease) == ("pending", 0,
                                                                   "another-worker")
    assert Attempt.objects.count() == 0


def test_the_promotion_names_every_model_it_archived(registered, subscribe, sample_row):
    """A test between two versions while a third holds production: the winner archives it."""
    subscribe("http://93.184.216.34/hook")
    rf, et = registered["random forest"], registered["extra trees"]
    third = services.mlmodel_create(endpoint=rf.endpoint, name="rf", version="2", code=rf.code,
                                    owner="ann", artifact_path=rf.artifact_path)
    test = services.ab_test_create(title="et vs rf2", created_by="ann", mlmodels=[et, third])
    for model in (et, third):
        answered = predictions.prediction_create(endpoint_name="classifier",
                                                 input_data=sample_row, status="ab_testing",
                                                 name=model.name)
        services.feedback_set(mlrequest=answered, feedback="<=50K")
    services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")
    promoted = Event.objects.get(type="model.promoted").data
    assert {"id": rf.pk, "name": "random forest", "version": "0.0.1"} in promoted["archived"]


def test_staff_see_deliveries_with_their_attempts(admin_client, registered, subscribe,
                                                  receiver):
    hook = receiver(statuses=[500, 200])
    subscribe(hook.url)
    promote(registered)
    webhooks.deliver_due()
    delivery = Delivery.objects.get()
    for url in ("/admin/webhooks/subscriber/", "/admin/webhooks/event/",
                "/admin/webhooks/delivery/", f"/admin/webhooks/delivery/{delivery.pk}/change/"):
        assert admin_client.get(url).status_code == 200
    page = admin_client.get(f"/admin/webhooks/delivery/{delivery.pk}/change/").content.decode()
    assert "HTTP 500" in page
    admin_client.post("/admin/webhooks/delivery/", {"action": "retry_now",
                                                    "_selected_action": [delivery.pk]})
    assert webhooks.deliver_due() == 1 and Delivery.objects.get().state == "delivered"
    add_form = admin_client.get("/admin/webhooks/subscriber/add/").content.decode()
    assert 'name="secret"' in add_form  # shown once, where it is made
