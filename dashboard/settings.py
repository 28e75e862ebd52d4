"""Eventscope settings: every value comes from the environment (12-factor).

Each variable read here is documented in README.md (tests/test_docs.py checks
it). The helpers fail loudly on a malformed value instead of guessing.
"""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _raw(name):
    """A variable's value, or the content of the file named by NAME_FILE."""
    value = os.environ.get(name)
    file_name = os.environ.get(f"{name}_FILE")
    if value is None and file_name:
        try:
            value = Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name}: {exc}") from exc
    return value


def env_str(name, default=""):
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name, default=False):
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: expected 1/0, true/false, yes/no or on/off")


def env_int(name, default, minimum=None):
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a whole number") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r}: must be at least {minimum}")
    return number


def env_list(name, default="", sep=","):
    return [item.strip() for item in env_str(name, default).split(sep) if item.strip()]


def env_choice(name, default, choices):
    value = env_str(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


# Runtime state (embedded database, generated secret) lives under ./var.
VAR_DIR = Path(env_str("EVENTSCOPE_VAR_DIR", str(Path.cwd() / "var"))).resolve()


def _secret_key():
    key = env_str("EVENTSCOPE_SECRET_KEY")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    # O_EXCL: two processes starting at once must agree on one key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("EVENTSCOPE_DEBUG", False)
ALLOWED_HOSTS = env_list("EVENTSCOPE_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("EVENTSCOPE_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "template_partials",
    "django_htmx",
    "channels",
    "collector",
    "collector.brokers",
    "dashboard",
    "dashboard.alerts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

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
    }
]


def _database():
    url = env_str("DATABASE_URL")
    if url:
        import dj_database_url

        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
        if config["ENGINE"] != "django.db.backends.postgresql":
            raise ImproperlyConfigured("DATABASE_URL must be a postgresql:// URL")
        return config
    # No server given: an embedded PostgreSQL under ./var/pg, started on demand.
    from collector.embedded_pg import database_settings

    return database_settings(VAR_DIR / "pg")


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = not DEBUG and env_bool("EVENTSCOPE_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("EVENTSCOPE_LOG_LEVEL", "INFO").upper()},
    # httpx logs every request at INFO; broker polls would flood the log.
    "loggers": {"django.db.backends": {"level": "INFO"}, "httpx": {"level": "WARNING"}},
}

# ---- Eventscope: ingest -----------------------------------------------------
INGEST_AUTH = env_choice("EVENTSCOPE_INGEST_AUTH", "required", ("required", "off"))
# With ingest auth off, telemetry without a token lands in this project.
DEFAULT_PROJECT = env_str("EVENTSCOPE_DEFAULT_PROJECT", "default")
# Request bodies are bounded after decompression (the OpenTelemetry Collector's default).
MAX_BODY_BYTES = env_int("EVENTSCOPE_MAX_BODY_BYTES", 20 * 1024 * 1024, minimum=1024)
# CloudEvents payloads are stored up to this size; the rest is marked truncated.
PAYLOAD_MAX_BYTES = env_int("EVENTSCOPE_PAYLOAD_MAX_BYTES", 64 * 1024, minimum=0)
# Keys whose values are replaced before storage (collector/redact.py: words, then substring).
REDACT_KEYS = env_list(
    "EVENTSCOPE_REDACT_KEYS",
    "password,passwd,secret,token,authorization,api_key,apikey,card_number,cardnumber,"
    "credit_card,creditcard,cvv,ssn,cookie,session_id,sessionid,private_key,privatekey",
)
# The writer's queue bound, in items (spans + events); past it ingest answers 429.
QUEUE_MAX_ITEMS = env_int("EVENTSCOPE_QUEUE_MAX_ITEMS", 200_000, minimum=1)
# ... and in bytes: the memory requests hold from reading a body until its
# answer (a request counts as four times its size after decompression).
QUEUE_MAX_BYTES = env_int("EVENTSCOPE_QUEUE_MAX_BYTES", 256 * 1024 * 1024, minimum=1024 * 1024)

# ---- Eventscope: storage and background work --------------------------------
RETENTION_DAYS = env_int("EVENTSCOPE_RETENTION_DAYS", 7, minimum=1)
ROLLUP_RETENTION_DAYS = env_int("EVENTSCOPE_ROLLUP_RETENTION_DAYS", 90, minimum=1)
BROKERS = env_list("EVENTSCOPE_BROKERS", "", sep=";")
# Broker pollers run this often; one broker slower than the timeout is marked unreachable.
BROKER_POLL_SECONDS = env_int("EVENTSCOPE_BROKER_POLL_SECONDS", 15, minimum=1)
BROKER_TIMEOUT_SECONDS = env_int("EVENTSCOPE_BROKER_TIMEOUT_SECONDS", 10, minimum=1)
# The sliding window over which a consumer group's lag status is judged.
LAG_WINDOW_SECONDS = env_int("EVENTSCOPE_LAG_WINDOW_SECONDS", 600, minimum=10)
WEBHOOK_ALLOW_PRIVATE = env_bool("EVENTSCOPE_WEBHOOK_ALLOW_PRIVATE", False)

# ---- Eventscope: alerts and webhooks ------------------------------------------
# Undelivered webhook notifications are retried with backoff for this long.
WEBHOOK_RETRY_HOURS = env_int("EVENTSCOPE_WEBHOOK_RETRY_HOURS", 24, minimum=1)
# Hard limit on one webhook request, name lookup included; a claimed delivery is
# re-claimable after 3x this long.
WEBHOOK_TIMEOUT_SECONDS = env_int("EVENTSCOPE_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# How often the worker evaluates alert rules.
ALERT_EVALUATION_SECONDS = env_int("EVENTSCOPE_ALERT_EVALUATION_SECONDS", 15, minimum=1)
# Where people reach the web UI; links in notifications point here.
PUBLIC_URL = env_str("EVENTSCOPE_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
