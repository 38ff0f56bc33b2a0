"""Webhooks: record events with the change they report, and deliver them, signed, until answered.

Delivery is at least once: a worker that dies between POSTing and recording the answer sends
the delivery again after its lease, so a receiver deduplicates by the ``X-Webhook-Delivery`` id.
A receiver that is down only delays its deliveries: each failed attempt is recorded and the
delivery is tried again after a backoff that doubles up to ``WEBHOOK_MAX_BACKOFF`` seconds;
nothing is dropped. A paused subscriber (``active`` false) keeps its pending deliveries, not
tried until it is active again. Deliveries go to public addresses only (addresses.py).

The signature: ``X-Webhook-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with
the subscriber's secret, so a receiver can check both who sent it and that it is recent.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from datetime import timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.endpoints.exceptions import InvalidInput
from apps.webhooks import addresses
from apps.webhooks.models import Attempt, Delivery, Event, Subscriber

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)  # how long a taken delivery is left to its worker


def event_record(*, endpoint, type: str, data: dict) -> Event | None:
    """Write an event and what each active subscriber of ``endpoint`` is owed. Call it inside
    the transaction of the change it reports."""
    subscribers = list(Subscriber.objects.filter(endpoint=endpoint, active=True))
    if not subscribers:
        return None
    event = Event.objects.create(type=type, endpoint=endpoint, data=data)
    now = timezone.now()
    Delivery.objects.bulk_create([Delivery(event=event, subscriber=s, next_attempt_at=now)
                                  for s in subscribers])
    return event


def envelope(event: Event) -> dict:
    """The JSON body a subscriber receives: the event's data and what identifies it."""
    return {"id": event.pk, "type": event.type, "endpoint": event.endpoint.name,
            "created_at": event.created_at.isoformat(), "data": event.data}


def subscriber_create(*, endpoint, url: str, created_by: str, secret: str = "",
                      active: bool = True) -> Subscriber:
    try:
        addresses.check_url(url)
    except addresses.Refused as exc:
        raise InvalidInput(f"url: {exc}") from None
    subscriber = Subscriber(endpoint=endpoint, url=url, created_by=created_by, active=active)
    if secret:
        subscriber.secret = secret
    subscriber.save()
    return subscriber


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def backoff(attempts: int) -> timedelta:
    """Seconds before the next try after ``attempts`` failures: doubling, capped, jittered."""
    base = settings.WEBHOOK_BACKOFF * 2 ** min(attempts - 1, 30)
    return timedelta(seconds=min(base, settings.WEBHOOK_MAX_BACKOFF) * random.uniform(0.8, 1.2))


def _take_one() -> tuple[Delivery, str] | None:
    """The next due delivery of an active subscriber, leased to this worker: for LEASE it is
    not due for anyone else, and only the holder of its lease token may record its result.
    One at a time, so a lease never has to outlast more than one POST."""
    with transaction.atomic():
        delivery = (Delivery.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("event__endpoint", "subscriber")
                    .filter(state=Delivery.State.PENDING, next_attempt_at__lte=timezone.now(),
                            subscriber__active=True)
                    .order_by("next_attempt_at", "id").first())
        if delivery is None:
            return None
        token = uuid.uuid4().hex
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() + LEASE,
                                                      lease=token)
    return delivery, token


def _post(delivery: Delivery) -> tuple[int | None, str]:
    body = json.dumps(envelope(delivery.event), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "mlregistry-webhooks",
        "X-Webhook-Event": delivery.event.type,
        "X-Webhook-Delivery": str(delivery.pk),
        "X-Webhook-Signature": signature(delivery.subscriber.secret, int(time.time()), body),
    }
    try:
        addresses.check_url(delivery.subscriber.url)  # again: a name may resolve elsewhere now
        response = requests.post(delivery.subscriber.url, data=body, headers=headers,
                                 timeout=settings.WEBHOOK_TIMEOUT, allow_redirects=False)
    except addresses.Refused as exc:
        return None, f"refused: {exc}"
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000]
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, f"HTTP {response.status_code}"  # not its body: it is theirs


def deliver_one() -> bool:
    """Try the next due delivery once; False when none is due."""
    taken = _take_one()
    if taken is None:
        return False
    delivery, token = taken
    started = time.perf_counter()
    status_code, error = _post(delivery)
    attempts = delivery.attempts + 1
    done = {"state": Delivery.State.DELIVERED, "delivered_at": timezone.now()} if not error \
        else {"next_attempt_at": timezone.now() + backoff(attempts)}
    with transaction.atomic():
        # Only while this worker still holds the lease: a delivery whose lease ran out (or whose
        # subscriber was removed) is someone else's now, and its record is not overwritten.
        if Delivery.objects.filter(pk=delivery.pk, lease=token).update(
                attempts=attempts, lease="", **done):
            Attempt.objects.create(delivery_id=delivery.pk, status_code=status_code, error=error,
                                   seconds=time.perf_counter() - started)
    if error:
        logger.warning("webhook delivery %s to %s failed (attempt %s): %s", delivery.pk,
                       delivery.subscriber.url, attempts, error)
    return True


def deliver_due(limit: int = 50) -> int:
    """Try due deliveries, one at a time, up to ``limit``; return how many were tried."""
    tried = 0
    while tried < limit and deliver_one():
        tried += 1
    return tried


def delivery_retry_now(*, delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.PENDING).update(
        next_attempt_at=timezone.now())
