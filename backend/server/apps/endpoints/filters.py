"""Query-string filters of the list routes (django-filter); a bad value is a 400 naming it."""
from datetime import timezone

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from apps.endpoints.models import ABTest, MLModel, MLModelStatus, MLRequest, Status


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, normalised to UTC.

    Python accepts offsets up to +/-23:59 and PostgreSQL only up to +/-15:59, so the offset is
    applied here; a moment that then falls outside years 1 to 9999 is refused, not sent on.
    """

    def to_python(self, value):
        try:
            parsed = super().to_python(value)
            return parsed if parsed is None else parsed.astimezone(timezone.utc)
        except OverflowError:
            raise forms.ValidationError(
                f"{value!r} is outside the dates the service can store (years 1 to 9999 in UTC)"
            ) from None


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class MLModelFilter(django_filters.FilterSet):
    endpoint_name = django_filters.CharFilter(field_name="endpoint__name")
    status = django_filters.ChoiceFilter(
        choices=Status.choices, method="filter_status", help_text="The model's active status."
    )

    class Meta:
        model = MLModel
        fields = ["endpoint", "endpoint_name", "name", "version", "status"]

    def filter_status(self, queryset, name, value):
        return queryset.filter(current_status=value)


class MLModelStatusFilter(django_filters.FilterSet):
    class Meta:
        model = MLModelStatus
        fields = ["mlmodel", "status", "active"]


class MLRequestFilter(django_filters.FilterSet):
    has_feedback = django_filters.BooleanFilter(
        field_name="feedback", lookup_expr="isnull", exclude=True,
        help_text="true: only requests with feedback; false: only those still waiting for it.",
    )
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = MLRequest
        fields = ["mlmodel", "ab_test", "response", "feedback", "has_feedback",
                  "created_after", "created_before"]


class ABTestFilter(django_filters.FilterSet):
    endpoint_name = django_filters.CharFilter(field_name="endpoint__name")
    running = django_filters.BooleanFilter(field_name="ended_at", lookup_expr="isnull")

    class Meta:
        model = ABTest
        fields = ["endpoint", "endpoint_name", "running"]
