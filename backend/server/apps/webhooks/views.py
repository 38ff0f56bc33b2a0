"""Subscribers of an endpoint's events. Every method needs an API token or a staff session:
a subscriber's URL and secret are not for anonymous readers."""
from django.db.models import ProtectedError
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from apps.endpoints.exceptions import Conflict
from apps.endpoints.permissions import TokenOrStaff
from apps.webhooks import services
from apps.webhooks.models import Subscriber
from apps.webhooks.serializers import SubscriberCreatedSerializer, SubscriberSerializer


@extend_schema_view(create=extend_schema(responses={201: SubscriberCreatedSerializer}))
class SubscriberViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin,
                        mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Webhook subscribers: each is POSTed a signed JSON event when a model of its endpoint is
    promoted and when an A/B test starts or stops."""

    queryset = Subscriber.objects.select_related("endpoint")
    serializer_class = SubscriberSerializer
    permission_classes = [TokenOrStaff]
    filterset_fields = ["endpoint", "active"]

    def perform_destroy(self, instance):
        try:
            instance.delete()
        except ProtectedError:
            raise Conflict(f"subscriber {instance.pk} has deliveries on record: pause it "
                           f"(PATCH {{\"active\": false}}) instead of deleting it") from None

    def create(self, request, *args, **kwargs):
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        subscriber = services.subscriber_create(**data.validated_data,
                                                created_by=request.user.get_username())
        return Response(SubscriberCreatedSerializer(subscriber).data,
                        status=status.HTTP_201_CREATED)
