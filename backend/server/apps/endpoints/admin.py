"""Staff management of the registry. Status changes go through the same service as the API."""
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from rest_framework.exceptions import ParseError

from apps.endpoints import ab_statistics, selectors, services
from apps.endpoints.exceptions import RegistryError
from apps.endpoints.parsers import parse_json_object
from apps.endpoints.serializers import REGISTRATION_STATUSES
from apps.endpoints.models import (
    ABTest, ABTestArm, Endpoint, MLModel, MLModelStatus, MLRequest, Status,
)


class ModelAdmin(admin.ModelAdmin):
    """A list's date hierarchy beyond the calendar (Django computes the year after 9999, and
    takes any number of digits for a year) is the admin's own "invalid lookup" answer, not a
    500. A NUL in a list's query is refused before (middleware.py)."""

    def get_changelist_instance(self, request):
        try:
            return super().get_changelist_instance(request)
        except (ValueError, OverflowError) as exc:
            if self.date_hierarchy and any(key.startswith(f"{self.date_hierarchy}__")
                                           for key in request.GET):
                raise IncorrectLookupParameters(exc) from exc
            raise


class MetricsField(forms.JSONField):
    """A model's offline figures, a JSON object held to the API's rules for JSON (parsers.py):
    no NaN, infinity, NUL, lone surrogate or nesting deeper than 32 levels."""

    def to_python(self, value):
        if self.disabled or not isinstance(value, str):
            return value
        if not value.strip():
            return {}
        try:
            return parse_json_object(value, "the metrics")
        except ParseError as exc:
            raise ValidationError(str(exc.detail), code="invalid") from None

    def bound_data(self, data, initial):
        """What the form shows again after an error: Django parses it with json.loads, which a
        deeply nested value takes past the recursion limit."""
        if self.disabled or data is None:
            return initial if self.disabled else None
        try:
            return parse_json_object(data, "the metrics")
        except ParseError:
            return InvalidJSONInput(data)


class MLModelChangeForm(forms.ModelForm):
    metrics = MetricsField(required=False, initial=dict)

    def validate_unique(self):
        """Every constraint, those on read-only fields too: Django leaves out the ones on fields
        not in the form, and a new name may clash with the same endpoint's and version's."""
        try:
            self.instance.validate_constraints()
        except ValidationError as exc:
            self._update_errors(exc)


@admin.register(Endpoint)
class EndpointAdmin(ModelAdmin):
    list_display = ["id", "name", "owner", "created_at"]
    search_fields = ["name", "owner"]


def _status_action(status):
    def action(modeladmin, request, queryset):
        for mlmodel in queryset:
            try:
                services.mlmodel_status_set(
                    mlmodel=mlmodel, status=status, created_by=request.user.get_username()
                )
            except RegistryError as exc:
                modeladmin.message_user(request, f"{mlmodel}: {exc.detail}", messages.ERROR)
            else:
                modeladmin.message_user(request, f"{mlmodel} is now {status}", messages.SUCCESS)

    action.__name__ = f"set_status_{status}"
    return admin.action(description=f"Set status: {status}")(action)


class StatusFilter(admin.SimpleListFilter):
    title = "current status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return Status.choices

    def queryset(self, request, queryset):
        return queryset.filter(current_status=self.value()) if self.value() else queryset


class RecordInline(admin.TabularInline):
    """Rows that are a record (status history, test arms, delivery attempts): shown, never
    added, edited or deleted here."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False


class MLModelStatusInline(RecordInline):
    model = MLModelStatus
    fields = ["status", "active", "created_by", "created_at"]
    ordering = ["-id"]


class MLModelUploadForm(forms.ModelForm):
    """A model version uploaded as an ONNX file, checked here as the API checks it."""

    metrics = MetricsField(required=False, initial=dict)

    artifact = forms.FileField(help_text="The ONNX file: the 14 raw features in, a label and "
                                         "class probabilities out (see the README).")
    status = forms.ChoiceField(choices=[(s, s) for s in REGISTRATION_STATUSES],
                               initial=Status.TESTING)

    class Meta:
        model = MLModel
        fields = ["endpoint", "name", "version", "description", "metrics", "artifact", "status"]

    def clean(self):
        data = super().clean()
        upload = data.get("artifact")
        if self.errors or upload is None:
            return data
        self.artifact_bytes = upload.read(settings.MAX_ARTIFACT_BYTES + 1)
        try:
            services.mlmodel_upload_check(endpoint=data["endpoint"], name=data["name"],
                                          version=data["version"], artifact=self.artifact_bytes)
        except RegistryError as exc:
            raise forms.ValidationError(exc.detail) from None
        return data


@admin.register(MLModel)
class MLModelAdmin(ModelAdmin):
    list_display = ["id", "name", "version", "endpoint", "current_status", "accuracy",
                    "artifact_format", "owner", "created_at"]
    list_filter = [StatusFilter, "endpoint", "name", "artifact_format"]
    search_fields = ["name", "version", "description", "owner"]
    # What a version runs is fixed when it is registered (through the service, which confines
    # the artifact to the store and the code to the catalogue); a new artifact is a new version.
    readonly_fields = ["endpoint", "code", "version", "artifact_path", "artifact_sha256",
                       "artifact_format", "classes", "training_profile", "created_at"]
    inlines = [MLModelStatusInline]
    actions = [_status_action(s) for s in Status.values if s != Status.AB_TESTING]
    form = MLModelChangeForm

    def get_queryset(self, request):
        return selectors.mlmodel_list()

    # "Add" is the upload of an ONNX file (the API's POST /api/v1/mlmodels/upload, through the
    # same service); a bundled artifact is registered by register_models or POST /api/v1/mlmodels.
    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = MLModelUploadForm
            kwargs["fields"] = MLModelUploadForm.Meta.fields
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        created = services.mlmodel_upload_checked(  # the form's clean() ran the checks
            endpoint=data["endpoint"], name=data["name"], version=data["version"],
            artifact=form.artifact_bytes, owner=request.user.get_username(),
            description=data["description"], metrics=data["metrics"], status=data["status"],
            created_by=request.user.get_username())
        obj.pk, obj.artifact_sha256 = created.pk, created.artifact_sha256

    @admin.display(ordering="current_status")
    def current_status(self, obj):
        return obj.current_status

    @admin.display(description="accuracy (offline)")
    def accuracy(self, obj):
        value = obj.metrics.get("accuracy")
        return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


@admin.register(MLModelStatus)
class MLModelStatusAdmin(ModelAdmin):
    list_display = ["id", "mlmodel", "status", "active", "created_by", "created_at"]
    list_filter = ["status", "active", "endpoint"]
    search_fields = ["mlmodel__name", "created_by"]
    list_select_related = ["mlmodel"]

    # History is written only by the status service, which keeps one active status per model.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(MLRequest)
class MLRequestAdmin(ModelAdmin):
    list_display = ["id", "mlmodel", "response", "feedback", "correct", "ab_test", "created_at"]
    list_filter = ["mlmodel", "ab_test", ("feedback", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["response", "feedback"]
    date_hierarchy = "created_at"
    list_select_related = ["mlmodel"]
    readonly_fields = ["mlmodel", "ab_test", "input_data", "full_response", "response",
                       "feedback", "feedback_at", "created_at"]

    @admin.display(boolean=True)
    def correct(self, obj):
        return None if obj.feedback is None else obj.feedback == obj.response

    def has_add_permission(self, request):
        return False


class ABTestArmInline(RecordInline):
    model = ABTestArm
    fields = ["mlmodel", "weight", "share", "was_production"]


class ABTestStartForm(forms.ModelForm):
    """Start an A/B test, as POST /api/v1/abtests does: through the same service.

    The service checks a test's definition and starts it in one transaction (locking the
    endpoint), so the form's validation is the service itself: a test that cannot start shows
    the service's reason beside the form, and one that can has started when the form is valid.
    """

    mlmodels = forms.ModelMultipleChoiceField(
        queryset=MLModel.objects.select_related("endpoint"), label="models",
        help_text="Two or more models of one endpoint.")
    split = forms.CharField(required=False, help_text="One weight per model, in the order "
                                                      "listed, comma-separated (default equal).")

    class Meta:
        model = ABTest
        fields = ["title", "mlmodels", "split", "policy", "alpha", "auto_stop", "max_feedback",
                  "strategy", "min_share"]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            split = ([float(w) for w in data["split"].split(",")] if data.get("split", "").strip()
                     else None)
        except ValueError:
            raise forms.ValidationError({"split": "give numbers separated by commas"}) from None
        models = sorted(data["mlmodels"], key=lambda m: m.pk)
        try:
            self.started = services.ab_test_create(
                title=data["title"], created_by=self.user.get_username(), mlmodels=models,
                split=split, policy=data["policy"], alpha=data["alpha"],
                auto_stop=data["auto_stop"], max_feedback=data["max_feedback"],
                strategy=data["strategy"], min_share=data["min_share"])
        except RegistryError as exc:
            raise forms.ValidationError(exc.detail) from None
        return data


@admin.register(ABTest)
class ABTestAdmin(ModelAdmin):
    list_display = ["id", "title", "endpoint", "state", "figures", "created_by", "created_at",
                    "ended_at"]
    list_filter = ["endpoint", ("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["title", "created_by", "summary"]
    readonly_fields = ["title", "endpoint", "created_by", "created_at", "ended_at", "state",
                       "policy", "alpha", "auto_stop", "max_feedback", "strategy", "min_share",
                       "live_summary", "results"]
    exclude = ["summary"]
    inlines = [ABTestArmInline]
    actions = ["stop_tests"]

    def get_queryset(self, request):
        return selectors.ab_test_list()

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, **kwargs)
        kwargs.update(form=ABTestStartForm, fields=ABTestStartForm.Meta.fields)
        form = super().get_form(request, obj, **kwargs)
        form.user = request.user
        return form

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def get_exclude(self, request, obj=None):
        return self.exclude if obj is not None else None

    def save_model(self, request, obj, form, change):
        if not change:  # started by the form's validation (ABTestStartForm)
            obj.pk = form.started.pk
            return
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    @admin.display(description="state")
    def state(self, obj):
        return "running" if obj.ended_at is None else "stopped"

    @admin.display(description="accuracy (feedback)")
    def figures(self, obj):
        return ", ".join(
            f"{m['name']}: " + (f"{100 * m['accuracy']:.1f}% ({m['feedback']})"
                                if m["accuracy"] is not None else "no feedback")
            for m in selectors.ab_test_results(obj)["models"]
        )

    @admin.display(description="summary")
    def live_summary(self, obj):
        return obj.summary if obj.ended_at is not None else ab_statistics.summary_text(
            selectors.ab_test_results(obj))

    @admin.action(description="Stop the selected tests and apply their promotion policy")
    def stop_tests(self, request, queryset):
        for ab_test in queryset:
            try:
                stopped = services.ab_test_stop(ab_test_id=ab_test.pk,
                                                stopped_by=request.user.get_username())
            except RegistryError as exc:
                self.message_user(request, f"{ab_test}: {exc.detail}", messages.ERROR)
            else:
                self.message_user(request, f"{ab_test}: stopped; "
                                  f"{stopped.results['decision']['reason']}", messages.SUCCESS)
