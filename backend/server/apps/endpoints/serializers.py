"""Output serializers for the catalog, and small input serializers that only parse."""
from django.conf import settings
from django.http import QueryDict
from django.urls import reverse
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ParseError

from apps.endpoints import selectors
from apps.endpoints.exceptions import InvalidInput
from apps.endpoints.parsers import parse_json_object
from apps.endpoints.models import (
    ABTest, Endpoint, MLModel, MLModelStatus, MLRequest, Policy, Status, Strategy,
)
from apps.ml.base import FORMATS
from apps.ml.income_classifier import preprocessing


# The statuses a new model version may start in: any but ab_testing, which only starting an
# A/B test gives. (One list, named in the OpenAPI schema: SPECTACULAR_SETTINGS.)
REGISTRATION_STATUSES = [s for s in Status.values if s != Status.AB_TESTING]


class EndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Endpoint
        fields = ["id", "name", "owner", "created_at"]
        read_only_fields = ["id", "created_at"]


class PageField(serializers.Field):
    """The URL of an object's web page (apps/web), absolute when the request is known."""

    def __init__(self, view_name: str, **kwargs):
        self.view_name = view_name
        super().__init__(source="pk", read_only=True, **kwargs)

    def to_representation(self, pk) -> str:
        path = reverse(self.view_name, args=[pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


extend_schema_field({"type": "string", "format": "uri"})(PageField)


class MLModelSerializer(serializers.ModelSerializer):
    endpoint_name = serializers.CharField(source="endpoint.name", read_only=True)
    status = serializers.CharField(source="current_status", read_only=True, allow_null=True)
    page = PageField("web:model", help_text="The model version's web page.")

    class Meta:
        model = MLModel
        fields = [
            "id", "endpoint", "endpoint_name", "name", "description", "code", "version", "owner",
            "created_at", "status", "artifact_source", "artifact_path", "artifact_sha256",
            "artifact_format", "metrics", "classes", "page",
        ]
        read_only_fields = fields


class MLModelCreateSerializer(serializers.Serializer):
    endpoint = serializers.PrimaryKeyRelatedField(queryset=Endpoint.objects.all())
    name = serializers.CharField(max_length=128)
    version = serializers.CharField(max_length=32)
    code = serializers.CharField(max_length=255, help_text="Import path of the algorithm class.")
    owner = serializers.CharField(max_length=128)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    artifact_path = serializers.CharField(max_length=500)
    artifact_sha256 = serializers.RegexField(
        r"^[0-9a-f]{64}$", required=False, default="",
        help_text="Checked against the file when given; recorded from the file when omitted.",
    )
    artifact_format = serializers.ChoiceField(
        choices=FORMATS, required=False, default=None,
        help_text="onnx or joblib; by default the file's extension says.",
    )
    metrics = serializers.DictField(required=False, default=dict)
    classes = serializers.ListField(child=serializers.CharField(), required=False, default=None)
    status = serializers.ChoiceField(
        choices=REGISTRATION_STATUSES, default=Status.TESTING
    )
    created_by = serializers.CharField(max_length=128, required=False, default="")
    training_profile = serializers.DictField(
        required=False, default=dict,
        help_text="The training data's feature distributions, as research/train.py writes them "
                  "in its manifest: what the model's drift is measured against.")


# The most requests one drift computation reads (each is a row of 14 features).
DRIFT_MAX_LAST = 100_000


class DriftQuerySerializer(serializers.Serializer):
    last = serializers.IntegerField(
        min_value=1, max_value=DRIFT_MAX_LAST, required=False,
        default=lambda: settings.DRIFT_WINDOW,
        help_text=f"How many of the model's latest requests to compare with its training data "
                  f"(1 to {DRIFT_MAX_LAST}; default DRIFT_WINDOW, 1000 unless configured).")


class DriftBinSerializer(serializers.Serializer):
    bin = serializers.CharField(help_text='What the bin holds: "<= 22", "(22, 26]", "> 58", a '
                                          'category, "(other)" or "(missing)".')
    expected = serializers.FloatField(help_text="The bin's share of the training rows.")
    actual = serializers.FloatField(allow_null=True,
                                    help_text="Its share of the requests; null without any.")


class DriftFeatureSerializer(serializers.Serializer):
    feature = serializers.CharField()
    psi = serializers.FloatField(allow_null=True,
                                 help_text="Population Stability Index; null without requests.")
    drifted = serializers.BooleanField(
        help_text="Whether psi is above the threshold, on enough requests to say so.")
    enough = serializers.BooleanField(
        help_text="Whether the window holds 20 requests per bin of the feature; below that "
                  "the PSI is biased upward and never flagged.")
    bins = DriftBinSerializer(many=True)


class DriftSerializer(serializers.Serializer):
    """How far a model's latest requests have moved from its training data, per feature."""

    mlmodel = serializers.IntegerField()
    last = serializers.IntegerField(help_text="The window asked for: the latest N requests.")
    requests = serializers.IntegerField(
        help_text="Requests compared: those the model answered or scored as a shadow, up to "
                  "last.")
    threshold = serializers.FloatField(help_text="A feature above this PSI has drifted.")
    features = DriftFeatureSerializer(many=True)
    drifted = serializers.ListField(child=serializers.CharField(),
                                    help_text="The features above the threshold.")


class EndpointRefField(serializers.CharField):
    """An endpoint by its name (``classifier``) or its id: what a curl command has at hand."""

    default_error_messages = {"unknown": "no endpoint named (or with id) {value!r}"}

    def run_validation(self, data=serializers.empty):
        value = super().run_validation(data)  # a string of at most max_length first
        found = Endpoint.objects.filter(name=value).first()
        # isdigit() alone also takes '³' and other digits int() refuses.
        if found is None and value.isascii() and value.isdigit() and len(value) < 19:
            found = Endpoint.objects.filter(pk=int(value)).first()
        if found is None:
            self.fail("unknown", value=value)
        return found

    def to_representation(self, value):
        return value.name


class MLModelUploadSerializer(serializers.Serializer):
    """A model version trained elsewhere, uploaded as an ONNX file (multipart/form-data)."""

    artifact = serializers.FileField(
        allow_empty_file=False, use_url=False,
        help_text="The ONNX file: the 14 raw features in, a label and class probabilities out "
                  "(a scikit-learn Pipeline exported by skl2onnx). At most MAX_ARTIFACT_BYTES.")
    endpoint = EndpointRefField(max_length=128,
                                help_text="The endpoint's name (or id), e.g. classifier.")
    name = serializers.CharField(max_length=128)
    version = serializers.CharField(max_length=32)
    owner = serializers.CharField(max_length=128, required=False, default="",
                                  help_text="Default: the uploading user.")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    metrics = serializers.CharField(
        required=False, default="{}", max_length=100_000,
        help_text='Offline figures as a JSON object, e.g. {"accuracy": 0.85}.')
    status = serializers.ChoiceField(
        choices=REGISTRATION_STATUSES, default=Status.TESTING)

    def validate_metrics(self, value):
        """A form field holding JSON: parsed and checked as a JSON body is (parsers.py)."""
        try:
            return parse_json_object(value, "the metrics")
        except ParseError as exc:
            raise serializers.ValidationError(str(exc.detail)) from None


class MLModelStatusSerializer(serializers.ModelSerializer):
    class Meta:
        model = MLModelStatus
        fields = ["id", "mlmodel", "status", "active", "created_by", "created_at"]
        read_only_fields = fields


class MLModelStatusCreateSerializer(serializers.Serializer):
    mlmodel = serializers.PrimaryKeyRelatedField(queryset=MLModel.objects.all())
    status = serializers.ChoiceField(choices=Status.values)
    created_by = serializers.CharField(max_length=128)


class MLRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = MLRequest
        fields = [
            "id", "mlmodel", "ab_test", "input_data", "full_response", "response", "feedback",
            "feedback_at", "created_at",
        ]
        read_only_fields = [f for f in fields if f != "feedback"]


class FeedbackSerializer(serializers.Serializer):
    feedback = serializers.CharField(max_length=64, help_text="The true label, e.g. '>50K'.")


@extend_schema_field({"type": "string", "enum": Status.answering(),
                     "default": Status.PRODUCTION})
class ServingStatusField(serializers.CharField):
    """A status that serves predictions, by the one rule (``Status.parse``)."""

    def to_internal_value(self, data):
        try:
            return Status.parse(super().to_internal_value(data), serving=True)
        except InvalidInput as exc:
            raise serializers.ValidationError(exc.detail) from None


class PredictQuerySerializer(serializers.Serializer):
    """Predict's query string: which model answers (and, under an A/B test, a client key)."""

    status = ServingStatusField(
        required=False, allow_blank=True, max_length=32, default=Status.PRODUCTION,
        help_text="Status of the model that answers (default production). Archived models "
                  "are not served.",
    )
    version = serializers.CharField(max_length=32, required=False,
                                    help_text="Model version, to narrow the choice.")
    name = serializers.CharField(max_length=128, required=False,
                                 help_text="Model name, to narrow the choice.")
    user_id = serializers.CharField(
        max_length=256, required=False,
        help_text="Under ab_testing: a stable client key; the same key reaches the same model "
                  "for the whole test. The X-User-Id header does the same.",
    )


def predict_body(request):
    """The rows a predict request sends: its JSON as it is, or the browsable API's HTML form
    (one row, its numbers still strings) converted by the row serializer."""
    if not isinstance(request.data, QueryDict):  # JSON
        return request.data
    form = IncomeFeaturesSerializer(data=request.data)
    form.is_valid(raise_exception=True)
    return {name: (None if value == "" else value) for name, value in form.validated_data.items()}


PREDICT_DEFAULTS = {"status": Status.PRODUCTION}


def predict_query(params) -> dict:
    """Predict's query string, validated; the default URL (no query) skips building the
    serializer, which cost a tenth of a single-row prediction (issue 9's profile)."""
    if not params:
        return dict(PREDICT_DEFAULTS)
    query = PredictQuerySerializer(data=params)
    query.is_valid(raise_exception=True)
    return query.validated_data


def _features_serializer() -> type[serializers.Serializer]:
    """One row of the predict body, built from the model's own feature list: what the OpenAPI
    schema shows, and the browsable API's HTML form (whose strings it turns into numbers). JSON
    bodies are validated by apps/ml's preprocessing alone."""
    fields = {}
    for name in preprocessing.FEATURES:
        example = preprocessing.EXAMPLE_ROW[name]  # what the browsable API's forms start with
        if name in preprocessing.NUMERIC:
            fields[name] = serializers.FloatField(min_value=-preprocessing.FLOAT32_MAX,
                                                  max_value=preprocessing.FLOAT32_MAX,
                                                  initial=example)
        else:
            fields[name] = serializers.CharField(
                allow_null=True, allow_blank=True, max_length=preprocessing.MAX_CATEGORY_LENGTH,
                initial=example,
                help_text="null, '' or '?' for a missing value; an unseen category is accepted.")
    # Feature names hold hyphens ("education-num"), so the class is built, not written out.
    return type("IncomeFeaturesSerializer", (serializers.Serializer,), fields)


IncomeFeaturesSerializer = _features_serializer()


class PredictionModelSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()


class PredictionSerializer(serializers.Serializer):
    """The answer to one row, as the OpenAPI schema documents it. Answers are built by
    ``prediction_answer`` (a dict per row, several times cheaper for a batch); a test holds the
    two to the same fields."""

    label = serializers.CharField(source="response")
    probability = serializers.FloatField(source="full_response.probability")
    status = serializers.SerializerMethodField()
    request_id = serializers.IntegerField(source="id")
    model = PredictionModelSerializer(source="mlmodel")
    ab_test = serializers.IntegerField(source="ab_test_id", allow_null=True)

    def get_status(self, obj) -> str:
        return "OK"


def prediction_answer(mlrequest: MLRequest) -> dict:
    """The answer to one row, from its stored request."""
    mlmodel = mlrequest.mlmodel
    return {"label": mlrequest.response, "probability": mlrequest.full_response["probability"],
            "status": "OK", "request_id": mlrequest.pk,
            "model": {"id": mlmodel.pk, "name": mlmodel.name, "version": mlmodel.version},
            "ab_test": mlrequest.ab_test_id}


MANY_ROWS = "An array of 1 to PREDICT_BATCH_MAX (default 1000) rows, answered in their order."
PredictBodySerializer = PolymorphicProxySerializer(
    component_name="PredictBody", resource_type_field_name=None, many=False,
    serializers=[IncomeFeaturesSerializer, IncomeFeaturesSerializer(many=True,
                                                                    help_text=MANY_ROWS)])
PredictAnswerSerializer = PolymorphicProxySerializer(
    component_name="PredictAnswer", resource_type_field_name=None, many=False,
    serializers=[PredictionSerializer, PredictionSerializer(many=True)])


class ABTestArmSerializer(serializers.Serializer):
    mlmodel = serializers.IntegerField(source="mlmodel_id")
    name = serializers.CharField(source="mlmodel.name")
    version = serializers.CharField(source="mlmodel.version")
    weight = serializers.FloatField(help_text="The split given at the start.")
    share = serializers.FloatField(
        help_text="The share of traffic the model gets now: the split, normalized; under "
                  "thompson, recomputed as feedback arrives.")
    was_production = serializers.BooleanField()


class ABTestSerializer(serializers.ModelSerializer):
    """A test with its figures: computed live while it runs, as frozen at stop afterwards."""

    endpoint_name = serializers.CharField(source="endpoint.name", read_only=True)
    state = serializers.SerializerMethodField()
    models = ABTestArmSerializer(source="arms", many=True, read_only=True)
    parent_mlmodel_1 = serializers.SerializerMethodField()
    parent_mlmodel_2 = serializers.SerializerMethodField()
    results = serializers.SerializerMethodField()
    page = PageField("web:abtest", help_text="The test's web page: figures, chart, stop.")

    class Meta:
        model = ABTest
        fields = ["id", "title", "endpoint", "endpoint_name", "state", "created_by",
                  "created_at", "ended_at", "policy", "alpha", "auto_stop", "max_feedback",
                  "strategy", "min_share", "models", "parent_mlmodel_1", "parent_mlmodel_2",
                  "results", "summary", "page"]
        read_only_fields = fields

    def get_state(self, obj) -> str:
        return "running" if obj.ended_at is None else "stopped"

    def _parent(self, obj, index):
        arms = list(obj.arms.all())
        return arms[index].mlmodel_id if len(arms) > index else None

    def get_parent_mlmodel_1(self, obj) -> int | None:
        return self._parent(obj, 0)

    def get_parent_mlmodel_2(self, obj) -> int | None:
        return self._parent(obj, 1)

    def get_results(self, obj) -> dict:
        return selectors.ab_test_results(obj)


class ABTestCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=256)
    created_by = serializers.CharField(max_length=128)
    mlmodels = serializers.PrimaryKeyRelatedField(
        queryset=MLModel.objects.select_related("endpoint"), many=True, required=False,
        help_text="Ids of the models under test (two or more).",
    )
    parent_mlmodel_1 = serializers.PrimaryKeyRelatedField(
        queryset=MLModel.objects.select_related("endpoint"), required=False,
        help_text="The tutorial's form for two models; same as mlmodels=[1st, 2nd].",
    )
    parent_mlmodel_2 = serializers.PrimaryKeyRelatedField(
        queryset=MLModel.objects.select_related("endpoint"), required=False
    )
    split = serializers.ListField(
        child=serializers.FloatField(), required=False, allow_null=True, default=None,
        help_text="One positive weight per model, in the same order (default: equal shares).",
    )
    policy = serializers.ChoiceField(
        choices=Policy.values, default=Policy.BEST,
        help_text="What the stop does: 'best' promotes the most accurate model; 'significant' "
                  "changes production only for a model better than the incumbent at alpha "
                  "(always-valid p-value).")
    alpha = serializers.FloatField(
        default=0.05, help_text="The test's significance level, between 0 and 0.5 (default 0.05).")
    auto_stop = serializers.BooleanField(
        default=False, help_text="Stop by itself, checked at each feedback, once the "
                                 "always-valid result is significant or max_feedback is reached.")
    max_feedback = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=2**31 - 1,
        help_text="With auto_stop: the feedback budget, over all models.")
    strategy = serializers.ChoiceField(
        choices=Strategy.values, default=Strategy.FIXED,
        help_text="'fixed': traffic by the split; 'thompson': Thompson sampling over each "
                  "model's feedback, at least min_share each.")
    min_share = serializers.FloatField(
        default=0.05, help_text="Under thompson: the least share of traffic any model gets, "
                                "above 0 and below 1/models (default 0.05).")

    def validate(self, data):
        parents = [data.pop(k) for k in ("parent_mlmodel_1", "parent_mlmodel_2") if k in data]
        if parents and data.get("mlmodels"):
            raise serializers.ValidationError(
                "give the models either as mlmodels or as parent_mlmodel_1/2, not both")
        data["mlmodels"] = data.get("mlmodels") or parents
        return data


class ABTestStopSerializer(serializers.Serializer):
    stopped_by = serializers.CharField(max_length=128, required=False, default="api")


class ShadowPairedSerializer(serializers.Serializer):
    method = serializers.CharField()
    requests = serializers.IntegerField(help_text="Requests with feedback both answered.")
    production_correct = serializers.IntegerField()
    production_accuracy = serializers.FloatField(allow_null=True)
    difference = serializers.FloatField(allow_null=True,
                                        help_text="Shadow minus production accuracy.")
    only_shadow_right = serializers.IntegerField()
    only_production_right = serializers.IntegerField()
    p_value = serializers.FloatField()
    significant = serializers.BooleanField(help_text="At the 5% level.")


class ShadowResultsSerializer(serializers.Serializer):
    """A model's record as a shadow: what it would have answered to production's requests."""

    mlmodel = serializers.IntegerField()
    requests = serializers.IntegerField(help_text="Production requests the model scored.")
    feedback = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    ci95 = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    paired = ShadowPairedSerializer()
