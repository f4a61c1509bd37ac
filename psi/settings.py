"""PSI settings: one module, driven by environment variables with embedded defaults.

Unset, every variable falls back to the embedded demo mode: SQLite, Celery tasks run
eagerly in the process, files in a local folder. The README lists every variable.
"""

import datetime
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from psi.env import env_bool, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PSI_VAR_DIR", str(BASE_DIR / "var")))

# Demo values: usable only while DEBUG is on; production refuses to start with them.
DEMO_SECRET_KEY = "psi-demo-secret-key-not-for-production-0000000000000000000000"
DEMO_IDENTITY_KEY = "cHNpLWRlbW8taWRlbnRpdHkta2V5LW5vdC1mb3ItdXM="
DEMO_IDENTITY_HMAC_KEY = "psi-demo-identity-hmac-key-not-for-production"
DEMO_UID_SECRET = "psi-demo-uid-secret-not-for-production"

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_secret("SECRET_KEY", DEMO_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000")

# Identity encryption (patient names, birth dates, record numbers). Kept apart from
# SECRET_KEY so either can be rotated without the other. PSI_IDENTITY_KEYS is a
# comma-separated list of Fernet keys, newest first; older keys still decrypt.
# PSI_IDENTITY_KEYS_FILE may hold the list instead (the file wins, like any secret).
IDENTITY_KEYS = [
    key.strip() for key in env_secret("PSI_IDENTITY_KEYS").split(",") if key.strip()
] or [DEMO_IDENTITY_KEY]
IDENTITY_HMAC_KEY = env_secret("PSI_IDENTITY_HMAC_KEY", DEMO_IDENTITY_HMAC_KEY)
# Keyed derivation of de-identified DICOM UIDs (same input, same output).
UID_SECRET = env_secret("PSI_UID_SECRET", DEMO_UID_SECRET)

if not DEBUG:
    _demo = {
        "SECRET_KEY": SECRET_KEY == DEMO_SECRET_KEY,
        "PSI_IDENTITY_KEYS": DEMO_IDENTITY_KEY in IDENTITY_KEYS,
        "PSI_IDENTITY_HMAC_KEY": IDENTITY_HMAC_KEY == DEMO_IDENTITY_HMAC_KEY,
        "PSI_UID_SECRET": UID_SECRET == DEMO_UID_SECRET,
    }
    if any(_demo.values()):
        names = ", ".join(name for name, demo in _demo.items() if demo)
        raise ImproperlyConfigured(
            f"DEBUG is off but {names} still hold the demo values; set real secrets."
        )
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DEBUG is off and ALLOWED_HOSTS is empty.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "simple_history",
    "psi",
    "consent",
    "cases",
    "design",
    "manufacturing",
    "compliance",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "psi.middleware.CorrelationIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "psi.middleware.GateCacheMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "psi.urls"
WSGI_APPLICATION = "psi.wsgi.application"
ASGI_APPLICATION = "psi.asgi.application"

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
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'psi.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Writers wait for each other instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# Idle sessions end: the cookie's age restarts with every request (REGULATORY 37).
SESSION_COOKIE_AGE = env_int("PSI_SESSION_IDLE_SECONDS", 15 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("PSI_STATIC_ROOT", str(VAR_DIR / "static")))
MEDIA_ROOT = Path(env_str("PSI_MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"

# Stored files: a local folder by default, S3-compatible object storage when a bucket
# is named. Names are content-derived and never overwritten.
S3_BUCKET = env_str("PSI_S3_BUCKET")
if S3_BUCKET:
    from botocore.config import Config as _BotoConfig

    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("PSI_S3_ENDPOINT_URL") or None,
            "region_name": env_str("PSI_S3_REGION") or None,
            "access_key": env_secret("PSI_S3_ACCESS_KEY") or None,
            "secret_key": env_secret("PSI_S3_SECRET_KEY") or None,
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
            # MinIO and Ceph reject the checksum headers newer boto3 sends by default.
            "client_config": _BotoConfig(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "allow_overwrite": False},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
PSI_UPLOAD_MAX_BYTES = env_int("PSI_UPLOAD_MAX_BYTES", 4 * 1024**3)
PSI_STAGING_DIR = Path(env_str("PSI_STAGING_DIR", str(VAR_DIR / "staging")))
# Staged objects no unfinished ingest names are removed once this old (beat's sweep).
PSI_STAGING_GRACE_SECONDS = env_int("PSI_STAGING_GRACE_SECONDS", 3600)

# E-mail
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "psi@localhost")

# Transport security: on whenever DEBUG is off (REGULATORY 38).
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "psi.api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["psi.api.permissions.ObjectPermissions"],
    "DEFAULT_FILTER_BACKENDS": [
        "psi.api.filters.VisibleToUser",
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "psi.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "psi.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
_TOKEN_TTL_HOURS = env_int("PSI_TOKEN_TTL_HOURS", 0)
REST_KNOX = {
    "TOKEN_TTL": datetime.timedelta(hours=_TOKEN_TTL_HOURS)
    if _TOKEN_TTL_HOURS
    else None,
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PSI API",
    "DESCRIPTION": (
        "Patient-specific implants from CT scan to implanted device. Objects you may "
        "not see answer 404; illegal case transitions answer 409."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "psi.api.schema.document_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {},
}

# Celery: with no broker configured, tasks run eagerly in the calling process.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
if CELERY_TASK_ALWAYS_EAGER:
    # Eager tasks still build a producer; the in-memory transport keeps it from
    # reaching for an AMQP server on localhost (and warning about it).
    CELERY_BROKER_URL = "memory://localhost/"
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_REJECT_ON_WORKER_LOST = False
# Redis re-delivers unacknowledged messages after this many seconds: keep it above the
# longest task, or a long task runs twice.
PSI_LONGEST_TASK_SECONDS = env_int("PSI_LONGEST_TASK_SECONDS", 3 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": PSI_LONGEST_TASK_SECONDS + 600}
# Put in front of every broker key (Redis): installations sharing one Redis database
# (a test and a staging instance) keep their queues apart.
PSI_BROKER_KEY_PREFIX = env_str("PSI_BROKER_KEY_PREFIX")
if PSI_BROKER_KEY_PREFIX:
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = PSI_BROKER_KEY_PREFIX
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A job that shows no progress for this long is re-enqueued by the sweeper.
PSI_JOB_STALL_SECONDS = env_int("PSI_JOB_STALL_SECONDS", 15 * 60)
PSI_JOB_MAX_ATTEMPTS = env_int("PSI_JOB_MAX_ATTEMPTS", 3)
# Celery workers and the DICOM listener keep database connections across tasks and
# batches, closed by age and health (psi.database), not around every task by
# Celery's Django fixup.
PSI_WORKER_CONN_MAX_AGE = env_int("PSI_WORKER_CONN_MAX_AGE", 600)
CELERY_DB_REUSE_MAX = 2**31
CELERY_BEAT_SCHEDULE = {
    "sweep-stalled-jobs": {
        "task": "psi.tasks.job_sweep",
        "schedule": env_int("PSI_JOB_SWEEP_SECONDS", 60),
    },
    "sweep-staging": {
        "task": "cases.imaging.staging_sweep",
        "schedule": env_int("PSI_STAGING_SWEEP_SECONDS", 3600),
    },
}

# DICOM C-STORE listener (manage.py dicom_listener). With the TLS certificate and key
# set it speaks only TLS; with a CA as well, peers must present a certificate it signed.
PSI_DICOM_HOST = env_str("PSI_DICOM_HOST", "127.0.0.1")
PSI_DICOM_PORT = env_int("PSI_DICOM_PORT", 11112)
PSI_DICOM_AE_TITLE = env_str("PSI_DICOM_AE_TITLE", "PSI")
PSI_DICOM_TLS_CERT = env_str("PSI_DICOM_TLS_CERT")
PSI_DICOM_TLS_KEY = env_str("PSI_DICOM_TLS_KEY")
PSI_DICOM_TLS_CA = env_str("PSI_DICOM_TLS_CA")
# Received objects go to the ingest per case in batches of this many, or after this
# many seconds, or when the association ends.
PSI_DICOM_BATCH_SIZE = env_int("PSI_DICOM_BATCH_SIZE", 50)
PSI_DICOM_BATCH_SECONDS = env_int("PSI_DICOM_BATCH_SECONDS", 5)
# Associations at once (more are rejected as transient, "local limit exceeded"; each
# holds a database connection while it routes objects); seconds a caller has to
# negotiate or release an association (a connection that says nothing is closed);
# seconds an association may stay silent before it is aborted.
PSI_DICOM_MAX_ASSOCIATIONS = env_int("PSI_DICOM_MAX_ASSOCIATIONS", 16)
PSI_DICOM_ACSE_TIMEOUT = env_int("PSI_DICOM_ACSE_TIMEOUT", 10)
PSI_DICOM_NETWORK_TIMEOUT = env_int("PSI_DICOM_NETWORK_TIMEOUT", 60)
# A study sent without an end (STOW-RS) is judged once no object has arrived for
# this long; uploads and DICOM associations say when they are done.
PSI_STUDY_STABLE_SECONDS = env_int("PSI_STUDY_STABLE_SECONDS", 30)

# Signing (21 CFR 11.200, 11.300(d)): consecutive failures lock signing for a while.
PSI_SIGNING_MAX_FAILURES = env_int("PSI_SIGNING_MAX_FAILURES", 5)
PSI_SIGNING_LOCK_SECONDS = env_int("PSI_SIGNING_LOCK_SECONDS", 15 * 60)

# Logging: structured enough to follow a request, never carrying patient identity.
# Request bodies and query strings are not logged; mail_admins is not used because it
# would e-mail request data.
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"correlation": {"()": "psi.middleware.CorrelationIdLogFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] "
            "%(message)s"
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["correlation"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {
            "handlers": ["console"],
            "level": "ERROR",
            "propagate": False,
        },
        "django.security": {"handlers": ["console"], "level": "WARNING"},
    },
}

GUARDIAN_RAISE_403 = False
GUARDIAN_MONKEY_PATCH_USER = False
ANONYMOUS_USER_NAME = None
SIMPLE_HISTORY_HISTORY_ID_USE_UUID = False
