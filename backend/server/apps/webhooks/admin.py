"""Staff see every subscriber, event, delivery and attempt; a pending delivery can be retried
at once."""
from django.contrib import admin, messages

from apps.endpoints.admin import ModelAdmin, RecordInline
from apps.webhooks import services
from apps.webhooks.models import Attempt, Delivery, Event, Subscriber


@admin.register(Subscriber)
class SubscriberAdmin(ModelAdmin):
    list_display = ["id", "endpoint", "url", "active", "created_by", "created_at"]
    list_filter = ["endpoint", "active"]
    search_fields = ["url"]
    readonly_fields = ["created_by", "created_at"]

    def get_fields(self, request, obj=None):
        # The secret is shown once, on the form that creates the subscriber (copy it there).
        shown = ["endpoint", "url", "active"] + (["secret"] if obj is None else [])
        return shown + ["created_by", "created_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)


@admin.register(Event)
class EventAdmin(ModelAdmin):
    list_display = ["id", "type", "endpoint", "created_at"]
    list_filter = ["type", "endpoint"]
    readonly_fields = ["type", "endpoint", "data", "created_at"]

    def has_add_permission(self, request):
        return False


class AttemptInline(RecordInline):
    model = Attempt
    fields = ["at", "status_code", "error", "seconds"]


@admin.register(Delivery)
class DeliveryAdmin(ModelAdmin):
    list_display = ["id", "event", "subscriber", "state", "attempts", "next_attempt_at",
                    "delivered_at"]
    list_filter = ["state", "event__type"]
    readonly_fields = ["event", "subscriber", "state", "attempts", "next_attempt_at",
                       "delivered_at"]
    inlines = [AttemptInline]
    actions = ["retry_now"]
    list_select_related = ["event", "subscriber"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Try the selected pending deliveries at once")
    def retry_now(self, request, queryset):
        for delivery in queryset:
            services.delivery_retry_now(delivery=delivery)
        self.message_user(request, "pending deliveries will be tried at once", messages.SUCCESS)
