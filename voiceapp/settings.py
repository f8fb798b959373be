"""Django settings. Everything comes from the environment (django-environ).

Every variable is documented in docs/configuration.md and .env.example. Defaults are
for development: SQLite, in-memory channel layer, eager Celery, offline engines.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env next to manage.py is read when present (compose passes env directly instead).
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str(
    "SECRET_KEY",
    default="dev-insecure-secret-key-change-me-in-production-0123456789abcdef"
    if DEBUG
    else environ.Env.NOTSET,
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Public https origin of this deployment, as configured at Twilio/Telnyx. Webhook signatures are
# checked against it (not the proxied request URL) and stream URLs are built from it.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "calls",
    "telephony",
    "simulator",
    "scenarios",
]

MIDDLEWARE = [
    # First: health probes (Docker, Kubernetes, load balancers) answer whatever their Host
    # header is, before any host validation (voiceapp/middleware.py says why).
    "voiceapp.middleware.HealthProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "voiceapp.urls"
ASGI_APPLICATION = "voiceapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Persistent connections: every spoken turn is a write, and reconnecting per write showed
# up in load profiles. Health checks drop connections the database has closed.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so tests can share the test database with a server subprocess.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"voiceapp-test-db-{os.getpid()}.sqlite3")
    }
    # Concurrent calls write turns at the same time: take the write lock at BEGIN and wait
    # for it, instead of failing with "database is locked" on a deferred upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A database that is down or hung must not hold requests (Twilio drops a voice webhook
    # after 15 s). Parameters in DATABASE_URL's query string win over these defaults.
    for _name, _value in {
        # psycopg gives up on a connection attempt after this many seconds (2 at least).
        "connect_timeout": env.int("DB_CONNECT_TIMEOUT_SECONDS", default=2),
        # Notice a vanished peer on an idle persistent connection (keepalives) and on one
        # with unacknowledged writes (tcp_user_timeout, Linux) in seconds, not ~15 minutes.
        # Neither notices a hung server whose kernel still ACKs: DB_REQUEST_TIMEOUT_SECONDS.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": env.int("DB_TCP_USER_TIMEOUT_MS", default=10_000),
        # The server cancels a statement (a lock wait, a runaway query) after this long.
        "options": f"-c statement_timeout={env.int('DB_STATEMENT_TIMEOUT_MS', default=30_000)}",
    }.items():
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(_name, _value)
# How long readiness and the carrier webhooks wait for the database before answering
# without it: 503, or the caller hears CALL_UNAVAILABLE_MESSAGE (calls/db_deadline.py).
DB_REQUEST_TIMEOUT_SECONDS = env.float("DB_REQUEST_TIMEOUT_SECONDS", default=2.0)
CALL_UNAVAILABLE_MESSAGE = env.str(
    "CALL_UNAVAILABLE_MESSAGE",
    default="Sorry, we cannot take your call right now. Please try again later.",
)

# --- Redis: channel layer, cache, Celery broker -------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 defaults to a 5 s socket timeout, the same as channels-redis's 5 s
            # BZPOPMIN: every consumer idle on its channel for 5 s would die with
            # "Timeout reading". Keep the socket timeout well above the blocking pop.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5}]
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A Redis outage must cost a cache read 2 s at most, never the OS's TCP timeout:
            # the cache shares the sync thread with the database (stream tokens, global stop).
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Prefix of our own Redis keys (global stop state), so deployments can share one Redis.
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", default="voiceapp")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="voiceapp")
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=not (REDIS_URL or env.str("CELERY_BROKER_URL", default=""))
)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "sweep-orphaned-calls": {"task": "calls.tasks.sweep_orphaned_calls", "schedule": 60.0},
}
# Post-call extraction gives up (status "failed", reason "timed out") after this many
# seconds, all attempts together (calls/tasks.py).
EXTRACTION_TIMEOUT_SECONDS = env.float("EXTRACTION_TIMEOUT_SECONDS", default=60.0)
# Post-call extraction without a cloud LLM key (calls/extraction.py): "local-llm" (the
# local model under a JSON-schema grammar, plus rules) or "heuristic" (no model at all).
EXTRACTION_OFFLINE_ENGINE = env.str("EXTRACTION_OFFLINE_ENGINE", default="local-llm")
if EXTRACTION_OFFLINE_ENGINE not in ("local-llm", "heuristic"):
    raise ImproperlyConfigured("EXTRACTION_OFFLINE_ENGINE must be local-llm or heuristic")
# Without a broker (development), tasks run in this many background threads of the web
# process, never on the call's own thread (calls/inline_tasks.py).
INLINE_TASK_WORKERS = env.int("INLINE_TASK_WORKERS", default=2)

# --- Auth, i18n, static -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Uploaded files, call recordings included; never served by a URL of its own (recordings
# go to staff through calls:recording), so keep it out of the proxy's static paths.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))
MEDIA_URL = "/media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
    # Call recordings (docs/recordings.md): MEDIA_ROOT by default; any Django storage,
    # e.g. django-storages' S3Storage for an S3-compatible bucket, through these two.
    "recordings": {
        "BACKEND": env.str(
            "RECORDINGS_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage"
        ),
        "OPTIONS": env.json("RECORDINGS_STORAGE_OPTIONS", default={}),
    },
}

# --- Production hardening (manage.py check --deploy is clean with DEBUG=false) ------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Health checks come from inside the container over plain http.
    SECURE_REDIRECT_EXEMPT = [r"^health/"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    # Preloading is a one-way commitment for the whole domain: opt-in, so don't nag about it.
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
    SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Vendors ------------------------------------------------------------------------------
GROQ_API_KEY = env.str("GROQ_API_KEY", default="")
GROQ_BASE_URL = env.str("GROQ_BASE_URL", default="")
GROQ_STT_MODEL = env.str("GROQ_STT_MODEL", default="whisper-large-v3-turbo")
GROQ_LLM_MODEL = env.str("GROQ_LLM_MODEL", default="llama-3.3-70b-versatile")
GROQ_EXTRACTION_MODEL = env.str("GROQ_EXTRACTION_MODEL", default="llama-3.1-8b-instant")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
AZURE_SPEECH_KEY = env.str("AZURE_SPEECH_KEY", default="")
AZURE_SPEECH_REGION = env.str("AZURE_SPEECH_REGION", default="")
AZURE_SPEECH_ENDPOINT = env.str("AZURE_SPEECH_ENDPOINT", default="")
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="")  # tests point it at a local fake
TWILIO_FROM_NUMBER = env.str("TWILIO_FROM_NUMBER", default="")
TELNYX_API_KEY = env.str("TELNYX_API_KEY", default="")
TELNYX_PUBLIC_KEY = env.str("TELNYX_PUBLIC_KEY", default="")
TELNYX_CONNECTION_ID = env.str("TELNYX_CONNECTION_ID", default="")
TELNYX_FROM_NUMBER = env.str("TELNYX_FROM_NUMBER", default="")
TELNYX_API_BASE_URL = env.str("TELNYX_API_BASE_URL", default="https://api.telnyx.com/v2")
TELEPHONY_ALLOW_UNSIGNED = env.bool("TELEPHONY_ALLOW_UNSIGNED", default=False)
STREAM_TOKEN_TTL_SECONDS = env.int("STREAM_TOKEN_TTL_SECONDS", default=300)
# Media sockets (simulator, Twilio, Telnyx; live/socket.py): a socket that has not sent
# its start message within this time is closed (4408); at most this many sockets of one process
# may be waiting for their start at once, more are refused (4503).
MEDIA_SOCKET_START_TIMEOUT_SECONDS = env.float("MEDIA_SOCKET_START_TIMEOUT_SECONDS", default=5.0)
MEDIA_SOCKETS_MAX_WAITING = env.int("MEDIA_SOCKETS_MAX_WAITING", default=200)
# Admission control (live/admission.py): this process refuses new calls (busy) while it
# holds this many (0: no limit; 50 is what one daphne process served on one core with no
# late frame in bench/load.py, late frames from 60) or while its event-loop lag p99 over
# the last 5 s is at least this many ms (0: not checked). Running calls are never touched.
MAX_CALLS_PER_PROCESS = env.int("MAX_CALLS_PER_PROCESS", default=50)
ADMISSION_MAX_LOOP_LAG_MS = env.float("ADMISSION_MAX_LOOP_LAG_MS", default=100.0)
# Caller audio budget per socket (token bucket on seconds of audio): a burst of this many
# seconds, then at most this multiple of real time; a faster stream is closed (4429).
MEDIA_BURST_SECONDS = env.float("MEDIA_BURST_SECONDS", default=5.0)
MEDIA_MAX_SPEED = env.float("MEDIA_MAX_SPEED", default=2.0)
# After calls end, one full garbage collection frees them (their objects form reference
# cycles), at most this often; 0: left to CPython's own passes (live/call_garbage.py).
GC_AFTER_CALLS_SECONDS = env.float("GC_AFTER_CALLS_SECONDS", default=10.0)
# When its socket goes, a session gets this long to stop before it is cancelled.
MEDIA_SOCKET_STOP_TIMEOUT_SECONDS = env.float("MEDIA_SOCKET_STOP_TIMEOUT_SECONDS", default=8.0)
# Engine used for a role when a profile asks for "auto": cloud when its key is set, else local.
VOICEAPP_MODEL_CACHE = env.str(
    "VOICEAPP_MODEL_CACHE", default=str(Path.home() / ".cache" / "voiceapp")
)
os.environ.setdefault("VOICEAPP_MODEL_CACHE", VOICEAPP_MODEL_CACHE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# --- Call policy --------------------------------------------------------------------------
GLOBAL_STOP_MAX_ERRORS_IN_WINDOW = env.int("GLOBAL_STOP_MAX_ERRORS_IN_WINDOW", default=3)
GLOBAL_STOP_WINDOW_SECONDS = env.int("GLOBAL_STOP_WINDOW_SECONDS", default=60)
ADMIN_NOTIFICATION_WEBHOOK_URL = env.str("ADMIN_NOTIFICATION_WEBHOOK_URL", default="")
ADMIN_API_KEY = env.str("ADMIN_API_KEY", default="")
ORPHAN_AFTER_SECONDS = env.int("ORPHAN_AFTER_SECONDS", default=90)
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
SHUTDOWN_GRACE_SECONDS = env.float("SHUTDOWN_GRACE_SECONDS", default=8.0)
# Turn writes that fail while the database is away are retried, in order, this long
# after the call ended (orchestrator/recorder_queue.py); only a process exit loses them.
RECORDER_RETRY_SECONDS = env.float("RECORDER_RETRY_SECONDS", default=120.0)
# Load and warm the engines of the active profiles when the server starts; /health/ready/
# answers 503 until they are loaded (calls/preload.py).
PRELOAD_ENGINES = env.bool("PRELOAD_ENGINES", default=True)
# A reply slower than this (voice-to-voice, ms) is a slow turn: the admin call list's
# "slow turns" filter and export (docs/operations.md#call-list).
SLOW_TURN_MS = env.int("SLOW_TURN_MS", default=1500)
# Call recordings (docs/recordings.md): written here while the call runs, moved to the
# "recordings" storage when it ends (the sweeper stores what a crashed process left);
# Opus bit rate of both channels together; recordings older than this many days are
# deleted by the sweeper (0: kept until their call is deleted).
RECORDINGS_SPOOL_DIR = Path(
    env.str("RECORDINGS_SPOOL_DIR", default=str(BASE_DIR / "var" / "recordings-spool"))
)
RECORDING_BITRATE_KBPS = env.int("RECORDING_BITRATE_KBPS", default=32)
RECORDING_RETENTION_DAYS = env.int("RECORDING_RETENTION_DAYS", default=0)

# --- Dev convenience ----------------------------------------------------------------------
DEMO_ADMIN_USERNAME = env.str("DEMO_ADMIN_USERNAME", default="admin")
DEMO_ADMIN_PASSWORD = env.str("DEMO_ADMIN_PASSWORD", default="admin")

# --- Logging ------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"call_context": {"()": "calls.logging.CallContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(call_tag)s%(message)s"},
        "json": {"()": "calls.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["call_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # httpx logs every request URL at INFO: a GET tool's URL holds the caller's
        # arguments (personal data). Our own tool and webhook logs say what matters.
        "httpx": {"level": "WARNING"},
    },
}
