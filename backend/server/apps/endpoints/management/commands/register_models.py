"""Register the trained models in the database: idempotent, safe to run from several processes.

Reads research/artifacts/manifest.json (written by research/train.py), creates the endpoint and
one MLModel per entry with its artifact path, sha256, offline metrics and training profile (what
drift is measured against), and gives each new model its first status. Running it again creates
nothing twice; an entry whose artifact was retrained (or is now the compiled ONNX file) gets its
artifact, checksum and metrics updated, with the checks of a registration, and a model whose
training profile differs from its entry's (one registered before profiles existed) gets the
entry's. It is the only way models enter the registry at start-up: importing wsgi.py writes
nothing.
"""
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from apps.endpoints import artifacts, services
from apps.endpoints.exceptions import Conflict, InvalidInput
from apps.endpoints.models import Endpoint, MLModel, Status

ENDPOINT = "classifier"
OWNER = "ml-team"
# The first status each model gets when it is registered; later changes go through the API.
INITIAL_STATUS = {"random forest": Status.PRODUCTION, "extra trees": Status.TESTING}


class Command(BaseCommand):
    help = "Register the models listed in the artifacts manifest (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--manifest", type=Path, default=None,
                            help="default: ML_ARTIFACTS_DIR/manifest.json")
        parser.add_argument("--endpoint", default=ENDPOINT)

    def handle(self, *args, manifest=None, endpoint=ENDPOINT, **options):
        manifest = manifest or Path(settings.ML_ARTIFACTS_DIR) / "manifest.json"
        if not manifest.is_file():
            raise CommandError(
                f"{manifest} does not exist: train the models first (python research/train.py)"
            )
        entries = json.loads(manifest.read_text())["models"]
        endpoint_obj = self._endpoint(endpoint)
        for entry in entries:
            self._register(endpoint_obj, entry)

    def _endpoint(self, name):
        try:
            return Endpoint.objects.get_or_create(name=name, defaults={"owner": OWNER})[0]
        except IntegrityError:  # created by a concurrent run between our get and create
            return Endpoint.objects.get(name=name)

    def _register(self, endpoint, entry):
        label = f"{entry['name']} {entry['version']}"
        profile = entry.get("training_profile")  # manifests written before drift have none
        existing = MLModel.objects.filter(
            endpoint=endpoint, name=entry["name"], version=entry["version"]
        ).first()
        if existing is None:
            try:
                services.mlmodel_create(
                    endpoint=endpoint, name=entry["name"], version=entry["version"],
                    code=entry["code"], owner=OWNER, description=entry.get("description", ""),
                    artifact_path=entry["artifact"], artifact_sha256=entry["sha256"],
                    artifact_format=entry.get("format"),
                    metrics=entry["metrics"], classes=entry["classes"],
                    status=INITIAL_STATUS.get(entry["name"], Status.TESTING),
                    created_by="register_models", training_profile=profile,
                )
            except Conflict:  # a concurrent run registered it first
                self.stdout.write(f"{label}: already registered")
                return
            self.stdout.write(self.style.SUCCESS(f"{label}: registered"))
        elif existing.artifact_source != artifacts.BUNDLED:
            raise CommandError(f"{label}: this version was uploaded to the artifact store; the "
                               f"manifest's file of the same name and version is not registered "
                               f"over it (give the trained model another version)")
        elif existing.artifact_sha256 != entry["sha256"]:
            try:
                services.mlmodel_artifact_update(
                    mlmodel=existing, artifact_path=entry["artifact"],
                    artifact_sha256=entry["sha256"], artifact_format=entry.get("format"),
                    metrics=entry["metrics"], training_profile=profile)
            except InvalidInput as exc:
                raise CommandError(f"{label}: {exc.detail}") from None
            self.stdout.write(self.style.WARNING(f"{label}: artifact retrained, checksum updated"))
        elif profile and profile != existing.training_profile:
            try:
                services.mlmodel_training_profile_set(mlmodel=existing, training_profile=profile)
            except InvalidInput as exc:
                raise CommandError(f"{label}: {exc.detail}") from None
            self.stdout.write(self.style.WARNING(f"{label}: training profile updated"))
        else:
            self.stdout.write(f"{label}: already registered")
