"""The registry's data: endpoints, model versions, their status history, requests and A/B tests.

The database holds metadata and a reference to each artifact (path, sha256, format), never model
objects.
Invariants that concurrent writers could break are database constraints, not checks in Python:
one active status per model, one active production model per endpoint, one running A/B test per
endpoint, statuses from a known set.
"""
from django.db import models
from django.db.models import Q

from apps.endpoints import artifacts
from apps.endpoints.exceptions import InvalidInput
from apps.ml.base import FORMATS, JOBLIB


class Status(models.TextChoices):
    TESTING = "testing"
    STAGING = "staging"
    # Scores every request production serves, beside it; never answers with it (predictions.py).
    SHADOW = "shadow"
    PRODUCTION = "production"
    AB_TESTING = "ab_testing"
    ARCHIVED = "archived"

    @classmethod
    def serving(cls) -> list[str]:
        """The statuses a model serves in (loaded, scoring): every status but ``archived``."""
        return [status for status in cls.values if status != cls.ARCHIVED]

    @classmethod
    def answering(cls) -> list[str]:
        """The statuses a client may ask predictions from (``?status=``): a shadow scores
        production's requests but never answers one."""
        return [status for status in cls.serving() if status != cls.SHADOW]

    @classmethod
    def parse(cls, value: str | None, *, serving: bool = False) -> str:
        """A status from a client: blank means production; ``serving`` allows only the
        statuses that answer predictions."""
        if value is None or value == "":
            return cls.PRODUCTION
        allowed = cls.answering() if serving else cls.values
        if value not in allowed:
            what = "a status that serves predictions" if serving else "a status"
            raise InvalidInput(f"{value!r} is not {what}; expected one of: {', '.join(allowed)}")
        return value


class Endpoint(models.Model):
    name = models.SlugField(max_length=128, unique=True)
    owner = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.name


class MLModel(models.Model):
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="mlmodels")
    name = models.CharField(max_length=128)
    description = models.TextField(blank=True)
    code = models.CharField(max_length=255, help_text="Import path of the algorithm class.")
    version = models.CharField(max_length=32)
    owner = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    artifact_source = models.CharField(
        max_length=16, choices=[(s, s) for s in artifacts.SOURCES], default=artifacts.BUNDLED,
        help_text="bundled: a file of ML_ARTIFACTS_DIR, trained into every image; store: "
                  "uploaded to the artifact store (ARTIFACT_STORAGE), fetched by each replica.",
    )
    artifact_path = models.CharField(
        max_length=500, help_text="Relative to ML_ARTIFACTS_DIR (bundled), or the artifact's "
                                  "name in the artifact store (store)."
    )
    artifact_sha256 = models.CharField(max_length=64)
    artifact_format = models.CharField(
        max_length=16, choices=[(f, f) for f in FORMATS], default=JOBLIB,
        help_text="onnx (served by onnxruntime, nothing unpickled) or joblib (a pickle).",
    )
    metrics = models.JSONField(default=dict, blank=True)
    classes = models.JSONField(default=list, help_text="The labels this model answers with.")
    training_profile = models.JSONField(
        default=dict, blank=True,
        help_text="Each feature's distribution in the training data (apps/ml/drift.py): what "
                  "served requests are compared with for drift.",
    )

    class Meta:
        ordering = ["id"]
        verbose_name = "ML model"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "name", "version"], name="mlmodel_unique_name_version"
            ),
        ]

    def __str__(self):
        return f"{self.name} {self.version}"


class MLModelStatus(models.Model):
    mlmodel = models.ForeignKey(MLModel, on_delete=models.CASCADE, related_name="statuses")
    # A copy of mlmodel.endpoint, set by the service: it lets the database itself enforce one
    # active production model per endpoint (a partial unique index cannot reach through a join).
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=32, choices=Status.choices)
    active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "ML model status"
        verbose_name_plural = "ML model statuses"
        constraints = [
            models.UniqueConstraint(
                fields=["mlmodel"], condition=Q(active=True), name="one_active_status_per_model"
            ),
            models.UniqueConstraint(
                fields=["endpoint"],
                condition=Q(active=True, status=Status.PRODUCTION),
                name="one_production_model_per_endpoint",
            ),
            models.CheckConstraint(
                condition=Q(status__in=Status.values), name="mlmodelstatus_status_known"
            ),
        ]
        indexes = [models.Index(fields=["endpoint", "status", "active"])]

    def __str__(self):
        return f"{self.mlmodel}: {self.status}{'' if self.active else ' (inactive)'}"


class Policy(models.TextChoices):
    """What a test's stop does with production."""

    BEST = "best"  # the most accurate model is promoted, significant or not
    SIGNIFICANT = "significant"  # production changes only on a significant difference


class Strategy(models.TextChoices):
    """How a test splits its traffic."""

    FIXED = "fixed"  # by the split given at the start
    THOMPSON = "thompson"  # Thompson sampling over the arms' feedback (routing.py)


class ABTest(models.Model):
    title = models.CharField(max_length=256)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="abtests")
    mlmodels = models.ManyToManyField(MLModel, through="ABTestArm", related_name="abtests")
    created_by = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    summary = models.TextField(blank=True)
    results = models.JSONField(null=True, blank=True)
    policy = models.CharField(max_length=16, choices=Policy.choices, default=Policy.BEST)
    alpha = models.FloatField(default=0.05, help_text="The test's significance level.")
    auto_stop = models.BooleanField(
        default=False, help_text="Stop by itself once the always-valid result is significant "
                                 "or max_feedback is reached.")
    max_feedback = models.PositiveIntegerField(
        null=True, blank=True, help_text="With auto_stop: stop after this much feedback.")
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.FIXED)
    min_share = models.FloatField(
        default=0.05, help_text="Under thompson: the least share of traffic any model gets.")

    class Meta:
        ordering = ["-id"]
        verbose_name = "A/B test"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint"], condition=Q(ended_at__isnull=True),
                name="one_running_abtest_per_endpoint",
            ),
            models.CheckConstraint(condition=Q(alpha__gt=0, alpha__lt=0.5),
                                   name="abtest_alpha_range"),
            models.CheckConstraint(condition=Q(min_share__gt=0, min_share__lt=0.5),
                                   name="abtest_min_share_range"),
            models.CheckConstraint(condition=Q(policy__in=Policy.values),
                                   name="abtest_policy_known"),
            models.CheckConstraint(condition=Q(strategy__in=Strategy.values),
                                   name="abtest_strategy_known"),
        ]

    def __str__(self):
        return self.title


class ABTestArm(models.Model):
    """One model under test and its share of the test's traffic (weights need not sum to 1)."""

    ab_test = models.ForeignKey(ABTest, on_delete=models.CASCADE, related_name="arms")
    mlmodel = models.ForeignKey(MLModel, on_delete=models.PROTECT, related_name="abtest_arms")
    weight = models.FloatField(default=1.0)
    # The share of traffic the arm gets now, which the predict path routes by: the split,
    # normalized; under Thompson sampling recomputed as feedback arrives (services.py).
    share = models.FloatField(default=1.0)
    # The endpoint's production model when the test started: it keeps answering the default
    # (no status) URL while the test runs, and is archived if another model wins.
    was_production = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["ab_test", "mlmodel"], name="abtestarm_unique_model"),
            models.CheckConstraint(condition=Q(weight__gt=0), name="abtestarm_weight_positive"),
            models.CheckConstraint(condition=Q(share__gt=0), name="abtestarm_share_positive"),
        ]


class MLRequest(models.Model):
    # No index of its own: (mlmodel, created_at) below serves lookups by model (as the unique
    # and composite indexes do for the shadow predictions' keys); each saved index is bytes on
    # every row of the largest table (README: What scale costs).
    mlmodel = models.ForeignKey(MLModel, on_delete=models.PROTECT, related_name="requests",
                                db_index=False)
    ab_test = models.ForeignKey(
        ABTest, on_delete=models.PROTECT, null=True, blank=True, related_name="requests",
        help_text="The A/B test that routed this request, if any.",
    )
    input_data = models.JSONField()
    full_response = models.JSONField()
    response = models.CharField(max_length=64)
    feedback = models.CharField(max_length=64, null=True, blank=True)
    feedback_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "ML request"
        indexes = [models.Index(fields=["mlmodel", "created_at"])]

    def __str__(self):
        return f"request {self.pk} -> {self.response}"


class ShadowPrediction(models.Model):
    """A shadow model's answer to a request production served: stored, never sent. Feedback on
    the served request is the shadow's feedback too."""

    mlrequest = models.ForeignKey(MLRequest, on_delete=models.CASCADE,
                                  related_name="shadow_predictions", db_index=False)
    mlmodel = models.ForeignKey(MLModel, on_delete=models.PROTECT,
                                related_name="shadow_predictions", db_index=False)
    full_response = models.JSONField()
    response = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["mlrequest", "mlmodel"],
                                    name="shadowprediction_one_per_model"),
        ]
        indexes = [models.Index(fields=["mlmodel", "created_at"])]

    def __str__(self):
        return f"shadow {self.mlmodel_id} on request {self.mlrequest_id} -> {self.response}"
