from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "apps.endpoints"
    verbose_name = "ML registry"
