"""Settings, all from the environment, with production-safe defaults.

    DEBUG            "1"/"true" turns debug on; off by default (``make run`` turns it on)
    SECRET_KEY       required unless DEBUG is on
    ALLOWED_HOSTS    comma-separated; default "localhost,127.0.0.1"
    DATABASE_URL     e.g. postgres://user:pass@host:5432/db; default: SQLite file db.sqlite3
    ML_ARTIFACTS_DIR where model artifacts named by relative paths live; default research/artifacts
    ARTIFACT_STORAGE where uploaded model versions are stored: local (ARTIFACT_STORE_DIR, default
                     var/artifact-store) or s3 (AWS_STORAGE_BUCKET_NAME, AWS_S3_ENDPOINT_URL,
                     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_S3_REGION_NAME)
    ARTIFACT_CACHE_DIR where each replica caches fetched artifacts by checksum; default var/artifact-cache
    ARTIFACT_CACHE_MAX_BYTES  how much that cache may hold; the least recently loaded go first
                     (default 1 GiB; 0 keeps no copies)
    MAX_ARTIFACT_BYTES the largest model upload (default 100 MiB)
    CSRF_TRUSTED_ORIGINS  comma-separated origins (https://ml.example.com) for the admin behind TLS
    SECURE_COOKIES   send session/CSRF cookies over HTTPS only; default on unless DEBUG
    SECURE_HSTS_SECONDS   HSTS max-age, when this app (not the TLS terminator) should set it
    MAX_BODY_BYTES   the largest request body read (default 1 MiB); larger is a 413
    METRICS_TOKEN    when set, /metrics needs "Authorization: Bearer <token>"
    PREDICT_RATE     each client's predict budget in rows, e.g. 1000/second (the default),
                     600/minute, off
    PREDICT_BATCH_MAX  the most rows one predict request may hold (default 1000)
    DRIFT_WINDOW     how many of a model's latest requests drift is measured over, on /metrics
                     and the model's page (default 1000)
    NUM_PROXIES      proxies in front of the app that append to X-Forwarded-For (1 behind nginx;
                     default 0: the client is REMOTE_ADDR); rate limiting keys on that address
    REDIS_URL        e.g. redis://redis:6379/0: a cache shared by every worker and replica, so
                     the rate limit counts once per client; default: a per-process memory cache

Production runs behind nginx, which terminates nothing itself: TLS ends at the load balancer in
front of it. nginx overwrites X-Forwarded-Proto on every request and gunicorn is reachable only
through nginx, so the header is trusted from the proxy alone.
"""
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BASE_DIR.parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set the SECRET_KEY environment variable to a long random "
            "string (python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=1 for local development."
        )
    SECRET_KEY = "insecure-local-development-key-never-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

# Behind the proxy: nginx sets X-Forwarded-Proto itself (a client's value never passes through).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SILENCED_SYSTEM_CHECKS = [
    # security.W004 (HSTS) and W008 (SSL redirect): TLS is terminated in front of nginx, which
    # is where HTTPS redirects and the HSTS header belong; SECURE_HSTS_SECONDS turns it on here.
    "security.W004",
    "security.W008",
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "apps.endpoints",
    "apps.webhooks",
    "apps.web",
]

MIDDLEWARE = [
    "apps.endpoints.metrics.RequestTimer",  # every request's duration, for /metrics
    "apps.endpoints.middleware.BodyLimitMiddleware",  # refuses a body over MAX_BODY_BYTES first
    "django.middleware.security.SecurityMiddleware",
    # Static files where no nginx serves them (Kubernetes): STATIC_ROOT, collected at build.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "server.urls"
WSGI_APPLICATION = "server.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several gunicorn workers share one SQLite file: WAL lets readers run beside the writer,
    # IMMEDIATE transactions take the write lock up front instead of failing on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests that start a live server need the test database in a file the server can open too.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database host that drops packets must fail a request (503) in seconds, not hold a worker
    # until gunicorn kills it (a worker's start-up, loading models, runs under that timeout too).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5))

if os.environ.get("REDIS_URL"):
    # Short socket timeouts: an unreachable Redis must not stall predictions (throttling.py).
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": os.environ["REDIS_URL"],
                          "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))

ML_ARTIFACTS_DIR = Path(os.environ.get("ML_ARTIFACTS_DIR", REPO_DIR / "research" / "artifacts"))

# The artifact store: where uploaded model versions live (apps/endpoints/artifacts.py), through
# Django's storage API. "local" (the default): a folder on this disk; "s3": any S3-compatible
# object store through django-storages, so every replica, on any host, can fetch what one of them
# received. Each replica caches the artifacts it fetched in ARTIFACT_CACHE_DIR, by checksum.
ARTIFACT_STORAGE = os.environ.get("ARTIFACT_STORAGE", "local")
ARTIFACT_CACHE_DIR = Path(os.environ.get("ARTIFACT_CACHE_DIR", REPO_DIR / "var" / "artifact-cache"))
# Below the disk the cache is on (a Kubernetes emptyDir's sizeLimit evicts the pod when exceeded).
ARTIFACT_CACHE_MAX_BYTES = env_int("ARTIFACT_CACHE_MAX_BYTES", 1024 * 1024 * 1024)
if ARTIFACT_CACHE_MAX_BYTES < 0:
    raise ImproperlyConfigured(f"ARTIFACT_CACHE_MAX_BYTES={ARTIFACT_CACHE_MAX_BYTES}: a size in "
                               f"bytes, or 0 to keep no copies")
# The largest artifact an upload may carry (its route's body limit; nginx is given it too).
MAX_ARTIFACT_BYTES = env_int("MAX_ARTIFACT_BYTES", 100 * 1024 * 1024)
if ARTIFACT_STORAGE == "local":
    _artifact_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ.get("ARTIFACT_STORE_DIR",
                                               str(REPO_DIR / "var" / "artifact-store")),
                    "allow_overwrite": True},
    }
elif ARTIFACT_STORAGE == "s3":
    from botocore.config import Config as _BotoConfig

    _artifact_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME", "ml-artifacts"),
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            # Names are checksums: the same name is the same bytes, never a different file.
            "file_overwrite": True,
            "default_acl": None,
            "querystring_auth": False,
            # Short, bounded waits: a worker loads its models at start-up, within gunicorn's
            # timeout, and an object store that does not answer must not take it down.
            "client_config": _BotoConfig(connect_timeout=3, read_timeout=20,
                                         retries={"max_attempts": 2, "mode": "standard"}),
        },
    }
else:
    raise ImproperlyConfigured(f"ARTIFACT_STORAGE={ARTIFACT_STORAGE!r}: expected local or s3")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "artifacts": _artifact_storage,
}

# The largest request body any route reads, files included (BodyLimitMiddleware; nginx is given
# the same limit): a batch of 1000 prediction rows is about 350 KB. Beyond it: 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_BODY_BYTES", 1024 * 1024)

# Webhook delivery (apps/webhooks): the first retry after this many seconds, doubling up to the
# maximum; each POST waits at most WEBHOOK_TIMEOUT seconds for an answer.
WEBHOOK_BACKOFF = float(os.environ.get("WEBHOOK_BACKOFF", "5"))
WEBHOOK_MAX_BACKOFF = float(os.environ.get("WEBHOOK_MAX_BACKOFF", "3600"))
WEBHOOK_TIMEOUT = float(os.environ.get("WEBHOOK_TIMEOUT", "10"))
# Subscribers may be on loopback or private addresses only when this is on (apps/webhooks).
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE")

# /metrics is scraped from each app instance (nginx does not pass it on); with a token set, a
# scrape must send it as "Authorization: Bearer <token>".
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# Predict is open and rate-limited per client (apps/endpoints/throttling.py); writes need a token
# or a staff session (apps/endpoints/permissions.py).
PREDICT_RATE = os.environ.get("PREDICT_RATE", "1000/second")  # rows, a batch counting each
# The most rows one predict request may hold (a JSON array of rows); more is a 413.
PREDICT_BATCH_MAX = env_int("PREDICT_BATCH_MAX", 1000)
# Drift (PSI per feature against the training data) is computed over each model's last
# DRIFT_WINDOW requests: by /metrics at every scrape, and on the model's page.
DRIFT_WINDOW = env_int("DRIFT_WINDOW", 1000)
if DRIFT_WINDOW < 1:
    raise ImproperlyConfigured(f"DRIFT_WINDOW={DRIFT_WINDOW} must be a positive number of "
                               f"requests, e.g. 1000")

# Database sessions, a cookie that cannot be a session key ignored (apps/endpoints/authentication.py).
SESSION_ENGINE = "apps.endpoints.authentication"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.endpoints.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.endpoints.permissions.ReadOrTokenOrStaff"],
    # JSON bounded in depth, its strings and numbers storable (apps/endpoints/parsers.py); forms
    # (the browsable API's HTML forms) held to the same rules.
    "DEFAULT_PARSER_CLASSES": [
        "apps.endpoints.parsers.SafeJSONParser",
        "apps.endpoints.parsers.SafeFormParser",
        "apps.endpoints.parsers.SafeMultiPartParser",
    ],
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.endpoints.exceptions.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ML registry",
    "DESCRIPTION": "A registry of ML models that serves their predictions, records every request "
                   "and its feedback, and runs A/B tests between model versions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {
        "RegistrationStatusEnum": "apps.endpoints.serializers.REGISTRATION_STATUSES"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.endpoints.schema.canonical_paths",
        "apps.endpoints.schema.error_responses",
        "apps.endpoints.schema.open_reads",
        "apps.endpoints.schema.batch_limits",
    ],
    # Served from this app's static files, not a CDN: the docs page works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
