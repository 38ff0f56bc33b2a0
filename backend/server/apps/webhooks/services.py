"""Webhooks: record events with the change they report, and deliver them, signed, until answered.

Delivery is at least once: a worker that dies between POSTing and recording the answer sends
the delivery again after its lease, so a receiver deduplicates by the ``X-Webhook-Delivery`` id.
A receiver that is down only delays its deliveries: each failed attempt is recorded and the
delivery is tried again after a backoff that doubles up to ``WEBHOOK_MAX_BACKOFF`` seconds;
nothing is dropped.

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
from datetime import timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.webhooks.models import Attempt, Delivery, Event, Subscriber

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)  # how long a taken delivery is left to its worker


def event_record(*, endpoint, type: str, data: dict) -> Event | None:
    """Write an event and what each active subscriber of ``endpoint`` is owed. Call it inside
    the transaction of the change it reports."""
    subscribers = list(Subscriber.objects.filter(endpoint=endpoint, active=True))
    if not subscribers:
        return None
    event = Event.objects.create(type=type, endpoint=endpoint, payload={})
    event.payload = {"id": event.pk, "type": type, "endpoint": endpoint.name,
                     "created_at": event.created_at.isoformat(), "data": data}
    event.save(update_fields=["payload"])
    now = timezone.now()
    Delivery.objects.bulk_create([Delivery(event=event, subscriber=s, next_attempt_at=now)
                                  for s in subscribers])
    return event


def subscriber_create(*, endpoint, url: str, created_by: str, secret: str = "",
                      active: bool = True) -> Subscriber:
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


def _take_due(limit: int) -> list[Delivery]:
    """Deliveries due now, leased to this worker (others skip the rows it holds)."""
    with transaction.atomic():
        due = list(Delivery.objects.select_for_update(skip_locked=True)
                   .select_related("event", "subscriber")
                   .filter(state=Delivery.State.PENDING, next_attempt_at__lte=timezone.now())
                   .order_by("next_attempt_at", "id")[:limit])
        Delivery.objects.filter(pk__in=[d.pk for d in due]).update(
            next_attempt_at=timezone.now() + LEASE)
    return due


def _post(delivery: Delivery) -> tuple[int | None, str]:
    body = json.dumps(delivery.event.payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "mlregistry-webhooks",
        "X-Webhook-Event": delivery.event.type,
        "X-Webhook-Delivery": str(delivery.pk),
        "X-Webhook-Signature": signature(delivery.subscriber.secret, int(time.time()), body),
    }
    try:
        response = requests.post(delivery.subscriber.url, data=body, headers=headers,
                                 timeout=settings.WEBHOOK_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000]
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, f"HTTP {response.status_code}: {response.text[:500]}"


def deliver_due(limit: int = 50) -> int:
    """Try every due delivery once; return how many were tried."""
    due = _take_due(limit)
    for delivery in due:
        started = time.perf_counter()
        status_code, error = _post(delivery)
        with transaction.atomic():
            Attempt.objects.create(delivery=delivery, status_code=status_code, error=error,
                                   seconds=time.perf_counter() - started)
            delivery.attempts += 1
            if not error:
                delivery.state, delivery.delivered_at = Delivery.State.DELIVERED, timezone.now()
            else:
                delivery.next_attempt_at = timezone.now() + backoff(delivery.attempts)
                logger.warning("webhook delivery %s to %s failed (attempt %s): %s", delivery.pk,
                               delivery.subscriber.url, delivery.attempts, error)
            delivery.save(update_fields=["state", "delivered_at", "attempts",
                                         "next_attempt_at"])
    return len(due)


def delivery_retry_now(*, delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.PENDING).update(
        next_attempt_at=timezone.now())
