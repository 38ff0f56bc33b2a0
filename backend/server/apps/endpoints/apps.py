from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "apps.endpoints"
    verbose_name = "ML registry"

    def ready(self):
        from apps.endpoints import throttling  # noqa: F401  (registers its system check)
