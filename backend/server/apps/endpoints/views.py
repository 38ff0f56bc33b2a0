"""Thin views: parse with a serializer, call one service or selector, serialize the result."""
from collections.abc import Callable

from django.conf import settings
from django.db.models import Model
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from apps.endpoints import filters, predictions, selectors, serializers, services
from apps.endpoints.models import Endpoint, MLModelStatus
from apps.endpoints.parsers import SafeFormParser, SafeJSONParser, SafeMultiPartParser
from apps.endpoints.routing import USER_KEY_HEADER
from apps.endpoints.throttling import PredictRateThrottle


# POST: validate with create_serializer_class, call create_service, and answer 201 with the new
# object re-read through get_queryset (so it carries the list's annotations). A comment, not a
# docstring: drf-spectacular would publish a docstring as every route's description.
class CreateThroughService:
    create_serializer_class: type[Serializer]
    create_service: Callable[..., Model]  # a service function, wrapped in staticmethod

    def create(self, request):
        data = self.create_serializer_class(data=request.data)
        data.is_valid(raise_exception=True)
        created = self.create_service(**data.validated_data)
        out = self.serializer_class(self.get_queryset().get(pk=created.pk),
                                    context=self.get_serializer_context())
        return Response(out.data, status=status.HTTP_201_CREATED)

    def get_serializer_class(self):
        # The browsable API builds its POST form from this: the fields one posts, not the ones
        # the answer shows.
        if self.request is not None and self.request.method == "POST":
            return self.create_serializer_class
        return self.serializer_class


NO_TRAINING_PROFILE = OpenApiResponse(
    response={"$ref": "#/components/schemas/Error"},
    description="The model has no training profile (or none this service can read) to "
                "compare its requests with.")


def create_schema(request, response):
    return extend_schema_view(create=extend_schema(request=request, responses={201: response}))


class EndpointViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Endpoint.objects.all()
    serializer_class = serializers.EndpointSerializer
    filterset_fields = ["name", "owner"]

    def perform_create(self, serializer):
        serializer.instance = services.endpoint_create(**serializer.validated_data)


@create_schema(serializers.MLModelCreateSerializer, serializers.MLModelSerializer)
class MLModelViewSet(CreateThroughService, viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.MLModelSerializer
    filterset_class = filters.MLModelFilter
    create_serializer_class = serializers.MLModelCreateSerializer
    create_service = staticmethod(services.mlmodel_create)

    def get_queryset(self):
        return selectors.mlmodel_list()

    def get_serializer_class(self):
        if self.action == "upload":
            return serializers.MLModelUploadSerializer
        return super().get_serializer_class()

    @extend_schema(request={"multipart/form-data": serializers.MLModelUploadSerializer},
                   responses={201: serializers.MLModelSerializer})
    @action(detail=False, methods=["post"], parser_classes=[SafeMultiPartParser])
    def upload(self, request):
        """Register a model version trained elsewhere: its ONNX file and what it is. The file
        is checked (it must take the 14 raw features and answer with the endpoint's classes),
        stored in the artifact store under its sha256, and served by every replica."""
        data = serializers.MLModelUploadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        upload = fields.pop("artifact")
        created = services.mlmodel_upload(
            artifact=upload.read(settings.MAX_ARTIFACT_BYTES + 1),
            owner=fields.pop("owner") or request.user.get_username() or "api",
            created_by=request.user.get_username() or "api", **fields)
        out = serializers.MLModelSerializer(self.get_queryset().get(pk=created.pk),
                                            context=self.get_serializer_context())
        return Response(out.data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: serializers.ShadowResultsSerializer})
    @action(detail=True, methods=["get"])
    def shadow(self, request, pk=None):
        """The model's record as a shadow: its accuracy on the production requests it scored,
        and a paired comparison with production's answers to them (McNemar's test)."""
        return Response(selectors.shadow_results(self.get_object()))

    @extend_schema(parameters=[serializers.DriftQuerySerializer],
                   responses={200: serializers.DriftSerializer, 409: NO_TRAINING_PROFILE})
    @action(detail=True, methods=["get"])
    def drift(self, request, pk=None):
        """How far the model's latest requests (answered, or scored as a shadow) have moved from
        its training data: each feature's Population Stability Index over its bins; a feature
        above 0.2 has drifted."""
        query = serializers.DriftQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        result = selectors.model_drift(self.get_object(), **query.validated_data)
        return Response(serializers.DriftSerializer(result).data)


@create_schema(serializers.MLModelStatusCreateSerializer, serializers.MLModelStatusSerializer)
class MLModelStatusViewSet(CreateThroughService, viewsets.ReadOnlyModelViewSet):
    queryset = MLModelStatus.objects.all()
    serializer_class = serializers.MLModelStatusSerializer
    filterset_class = filters.MLModelStatusFilter
    create_serializer_class = serializers.MLModelStatusCreateSerializer
    create_service = staticmethod(services.mlmodel_status_set)


class MLRequestViewSet(mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Served requests. PUT or PATCH {"feedback": "<label>"} records a request's true label."""

    serializer_class = serializers.MLRequestSerializer
    filterset_class = filters.MLRequestFilter

    def get_queryset(self):
        return selectors.mlrequest_list()

    @extend_schema(request=serializers.FeedbackSerializer)
    def update(self, request, *args, **kwargs):
        data = serializers.FeedbackSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        mlrequest = services.feedback_set(mlrequest=self.get_object(), **data.validated_data)
        return Response(self.get_serializer(mlrequest).data)

    @extend_schema(request=serializers.FeedbackSerializer)
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, **kwargs)


class PredictView(APIView):
    """Predict with one model of an endpoint: POST the 14 raw Adult features as one JSON object,
    or an array of such rows (1 to PREDICT_BATCH_MAX) for an array of answers in their order.

    Open to anonymous clients; each client (token user or IP address) is held to PREDICT_RATE,
    counted in rows.
    """

    parser_classes = [SafeJSONParser, SafeFormParser, SafeMultiPartParser]
    permission_classes = [AllowAny]
    throttle_classes = [PredictRateThrottle]

    def get_serializer(self, *args, **kwargs):
        """The browsable API's forms: the example row, to edit and post."""
        return serializers.IncomeFeaturesSerializer(*args, **kwargs)

    @extend_schema(
        request=serializers.PredictBodySerializer,
        responses={200: serializers.PredictAnswerSerializer},
        parameters=[serializers.PredictQuerySerializer],
    )
    def post(self, request, endpoint_name):
        choice = serializers.predict_query(request.query_params)
        body = serializers.predict_body(request)
        many = isinstance(body, list)
        mlrequests = predictions.predictions_create(
            endpoint_name=endpoint_name,
            rows=body if many else [body],
            batch=many,
            status=choice["status"],
            version=choice.get("version"),
            name=choice.get("name"),
            user_key=choice.get("user_id") or request.headers.get(USER_KEY_HEADER),
        )
        answers = [serializers.prediction_answer(mlrequest) for mlrequest in mlrequests]
        return Response(answers if many else answers[0])


@create_schema(serializers.ABTestCreateSerializer, serializers.ABTestSerializer)
class ABTestViewSet(CreateThroughService, viewsets.ReadOnlyModelViewSet):
    """A/B tests. POST starts one: its models move to the ab_testing status."""

    serializer_class = serializers.ABTestSerializer
    filterset_class = filters.ABTestFilter
    create_serializer_class = serializers.ABTestCreateSerializer
    create_service = staticmethod(services.ab_test_create)

    def get_queryset(self):
        return selectors.ab_test_list()


class StopABTestView(APIView):
    """Stop an A/B test and apply its promotion policy: under best the most accurate model
    goes to production; under significant only a model significantly better than the incumbent
    does, and otherwise production stays as it was. The answer says what was decided and why."""

    serializer_class = serializers.ABTestStopSerializer

    @extend_schema(request=serializers.ABTestStopSerializer,
                   responses={200: serializers.ABTestSerializer})
    def post(self, request, ab_test_id):
        data = serializers.ABTestStopSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ab_test = services.ab_test_stop(ab_test_id=int(ab_test_id), **data.validated_data)
        ab_test = selectors.ab_test_list().get(pk=ab_test.pk)
        return Response(serializers.ABTestSerializer(ab_test, context={"request": request}).data)
