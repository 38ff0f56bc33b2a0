"""Stock WSGI entry point: importing it loads settings and nothing else (no registry, no writes).

Models are registered by ``manage.py register_models`` and loaded lazily per process.
"""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
application = get_wsgi_application()
