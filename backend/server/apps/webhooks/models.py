"""Subscribers, and the outbox of events each is owed.

An event (a promotion, an A/B test started or stopped) is written in the same transaction as the
change it reports, with one Delivery per subscriber of its endpoint: if the change commits, so
do its deliveries; if it rolls back, nobody hears of it. The delivery worker
(``manage.py deliver_webhooks``) takes due deliveries, POSTs them, and records every attempt.
"""
import secrets

from django.core.exceptions import ValidationError
from django.db import models

from apps.webhooks import addresses


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def public_url(url: str) -> None:
    try:
        addresses.check_url(url)
    except addresses.Refused as exc:
        raise ValidationError(str(exc)) from None


class EventType(models.TextChoices):
    MODEL_PROMOTED = "model.promoted"
    ABTEST_STARTED = "abtest.started"
    ABTEST_STOPPED = "abtest.stopped"


class Subscriber(models.Model):
    endpoint = models.ForeignKey("endpoints.Endpoint", on_delete=models.CASCADE,
                                 related_name="subscribers")
    url = models.URLField(max_length=500, validators=[public_url])
    secret = models.CharField(max_length=128, default=new_secret,
                              help_text="Signs every delivery (HMAC-SHA256); never shown again.")
    active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.endpoint} -> {self.url}"


class Event(models.Model):
    type = models.CharField(max_length=32, choices=EventType.choices)
    endpoint = models.ForeignKey("endpoints.Endpoint", on_delete=models.CASCADE,
                                 related_name="events")
    data = models.JSONField(help_text="What happened; the delivery adds id, type, endpoint "
                                      "and time around it (services.envelope).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.type} #{self.pk}"


class Delivery(models.Model):
    """One event owed to one subscriber, until a 2xx answer; tried again with backoff."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    # A subscriber with deliveries on record is paused (active false), not deleted: its
    # deliveries and their attempts stay where staff can see them.
    subscriber = models.ForeignKey(Subscriber, on_delete=models.PROTECT,
                                   related_name="deliveries")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()  # indexed with state, as the worker asks
    lease = models.CharField(max_length=32, blank=True,
                             help_text="Held by the worker posting it now; empty otherwise.")
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self):
        return f"{self.event} to {self.subscriber.url}: {self.state}"


class Attempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    seconds = models.FloatField()

    class Meta:
        ordering = ["id"]
