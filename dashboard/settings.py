"""Eventscope settings: every value comes from the environment (12-factor).

Each variable read here is documented in README.md (tests/test_docs.py checks
it). The helpers fail loudly on a malformed value instead of guessing.
"""

import datetime as dt
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
    # One app per feature: its pages, API, queries, urls and templates side by side.
    "dashboard.accounts",
    "dashboard.flow",
    "dashboard.journeys",
    "dashboard.failures",
    "dashboard.lag",
    "dashboard.alerts",
    "dashboard.replays",
    "dashboard.deadletters",
    "dashboard.delivery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.static_files.StaticFilesMiddleware",
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
            # Filters every page uses: times, system badges.
            "builtins": ["dashboard.templatetags.eventscope"],
        },
    }
]


# Django connections of one process come from one bounded pool. Under ASGI
# every request runs in a thread of its own, and a connection kept per thread
# (CONN_MAX_AGE) outlived its thread: each request left one open. 0 turns the
# pool off (a connection per request, for an external pooler such as PgBouncer).
DB_POOL_SIZE = env_int("EVENTSCOPE_DB_POOL_SIZE", 10, minimum=0)
# How long a request waits for a free pooled connection before it fails.
DB_POOL_TIMEOUT_SECONDS = 10


def _database():
    url = env_str("DATABASE_URL")
    if url:
        import dj_database_url

        config = dj_database_url.parse(url, conn_health_checks=True)
        if config["ENGINE"] != "django.db.backends.postgresql":
            raise ImproperlyConfigured("DATABASE_URL must be a postgresql:// URL")
    else:
        # No server given: an embedded PostgreSQL under ./var/pg, started on demand.
        from collector.embedded_pg import database_settings

        config = database_settings(VAR_DIR / "pg")
    # Django's pool requires connections to be handed back at the end of each
    # request, which is what CONN_MAX_AGE = 0 means with a pool.
    config["CONN_MAX_AGE"] = 0
    if DB_POOL_SIZE:
        config.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": DB_POOL_SIZE,
            "timeout": DB_POOL_TIMEOUT_SECONDS,
            "name": "eventscope",
        }
    return config


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
LOGIN_URL = "login"  # URL names: the routes live in the features' urls.py
LOGIN_REDIRECT_URL = "flow"
LOGOUT_REDIRECT_URL = "login"

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
# Attribute limits (collector/attribute_limits.py), as the OpenTelemetry SDK's span
# limits: attributes kept per span, event, link, log record, resource and
# CloudEvent, and characters kept per string value.
MAX_ATTRIBUTES = env_int("EVENTSCOPE_MAX_ATTRIBUTES", 128, minimum=1)
MAX_ATTRIBUTE_LENGTH = env_int("EVENTSCOPE_MAX_ATTRIBUTE_LENGTH", 4096, minimum=256)
# Keys whose values are replaced before storage (collector/redact.py: words, then substring).
REDACT_KEYS = env_list(
    "EVENTSCOPE_REDACT_KEYS",
    "password,passwd,secret,token,authorization,api_key,apikey,card_number,cardnumber,"
    "credit_card,creditcard,cvv,ssn,cookie,session_id,sessionid,private_key,privatekey",
)
# The writer's queue bound, in items (spans + events); past it ingest answers 429.
QUEUE_MAX_ITEMS = env_int("EVENTSCOPE_QUEUE_MAX_ITEMS", 200_000, minimum=1)
# Every listening port (collector/connection_limits.py): request headers are
# due this long after a connection opens; kept-alive connections idle this
# long (longer than a load balancer's usual 60 s, so it closes first); and at
# most this many connections per port and process.
HTTP_HEADER_TIMEOUT_SECONDS = env_int("EVENTSCOPE_HTTP_HEADER_TIMEOUT_SECONDS", 10, minimum=1)
HTTP_KEEPALIVE_SECONDS = env_int("EVENTSCOPE_HTTP_KEEPALIVE_SECONDS", 75, minimum=1)
MAX_CONNECTIONS = env_int("EVENTSCOPE_MAX_CONNECTIONS", 1000, minimum=1)
# ... and in bytes: the memory requests hold from reading a body until its
# answer (a request counts as six times its size after decompression:
# collector.admission.DECODED_WEIGHT).
QUEUE_MAX_BYTES = env_int("EVENTSCOPE_QUEUE_MAX_BYTES", 256 * 1024 * 1024, minimum=1024 * 1024)

# ---- Eventscope: storage and background work --------------------------------
RETENTION_DAYS = env_int("EVENTSCOPE_RETENTION_DAYS", 7, minimum=1)
ROLLUP_RETENTION_DAYS = env_int("EVENTSCOPE_ROLLUP_RETENTION_DAYS", 90, minimum=1)
# Resolved alerts, finished webhook deliveries (with their attempts) and replays
# are kept this long (dashboard/retention.py); expired sessions go at once.
HISTORY_RETENTION_DAYS = env_int("EVENTSCOPE_HISTORY_RETENTION_DAYS", 30, minimum=1)
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
# Delivery findings (dashboard/delivery): an event failed or retried this many
# times is poison; a group's default deadline is at least this, or 3x its
# p95 produce->consume latency; a group is expected this long after it last consumed.
DELIVERY_POISON_ATTEMPTS = env_int("EVENTSCOPE_DELIVERY_POISON_ATTEMPTS", 3, minimum=1)
DELIVERY_DEADLINE_SECONDS = env_int("EVENTSCOPE_DELIVERY_DEADLINE_SECONDS", 60, minimum=1)
DELIVERY_EXPECTED_HOURS = env_int("EVENTSCOPE_DELIVERY_EXPECTED_HOURS", 24, minimum=1)
# Where people reach the web UI; links in notifications point here.
PUBLIC_URL = env_str("EVENTSCOPE_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

# ---- Eventscope: TLS and running behind a proxy ------------------------------------
# One certificate and key for every listening port (OTLP/HTTP, OTLP/gRPC, the
# web port of `serve`), re-read when the files change (collector/tls.py).
TLS_CERT_FILE = env_str("EVENTSCOPE_TLS_CERT_FILE")
TLS_KEY_FILE = env_str("EVENTSCOPE_TLS_KEY_FILE")
# Mutual TLS on the ingest ports: clients' certificates are checked against this CA.
TLS_CLIENT_CA_FILE = env_str("EVENTSCOPE_TLS_CLIENT_CA_FILE")
TLS_CLIENT_AUTH = env_choice("EVENTSCOPE_TLS_CLIENT_AUTH", "off", ("off", "optional", "required"))
# Client certificate name (subject CN or subject alternative name) = project slug.
TLS_CLIENT_PROJECTS = {}
for _item in env_list("EVENTSCOPE_TLS_CLIENT_PROJECTS"):
    _name, _, _slug = _item.rpartition("=")
    if not _name.strip() or not _slug.strip():
        raise ImproperlyConfigured(
            f"EVENTSCOPE_TLS_CLIENT_PROJECTS: {_item!r} is not certificate-name=project-slug"
        )
    TLS_CLIENT_PROJECTS[_name.strip()] = _slug.strip()
if bool(TLS_CERT_FILE) != bool(TLS_KEY_FILE):
    raise ImproperlyConfigured(
        "EVENTSCOPE_TLS_CERT_FILE and EVENTSCOPE_TLS_KEY_FILE go together: set both or neither"
    )
for _name, _path in (
    ("EVENTSCOPE_TLS_CERT_FILE", TLS_CERT_FILE),
    ("EVENTSCOPE_TLS_KEY_FILE", TLS_KEY_FILE),
    ("EVENTSCOPE_TLS_CLIENT_CA_FILE", TLS_CLIENT_CA_FILE),
):
    if _path and not Path(_path).is_file():
        raise ImproperlyConfigured(f"{_name}={_path}: no such file")
if TLS_CLIENT_AUTH != "off" and not (TLS_CERT_FILE and TLS_CLIENT_CA_FILE):
    raise ImproperlyConfigured(
        f"EVENTSCOPE_TLS_CLIENT_AUTH={TLS_CLIENT_AUTH} needs EVENTSCOPE_TLS_CERT_FILE, "
        "EVENTSCOPE_TLS_KEY_FILE and EVENTSCOPE_TLS_CLIENT_CA_FILE"
    )
if TLS_CLIENT_CA_FILE and TLS_CLIENT_AUTH == "off":
    raise ImproperlyConfigured(
        "EVENTSCOPE_TLS_CLIENT_CA_FILE is set but EVENTSCOPE_TLS_CLIENT_AUTH is off: "
        "set it to optional or required"
    )
if TLS_CLIENT_PROJECTS and TLS_CLIENT_AUTH == "off":
    raise ImproperlyConfigured(
        "EVENTSCOPE_TLS_CLIENT_PROJECTS needs EVENTSCOPE_TLS_CLIENT_AUTH=optional or required"
    )
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and that is the
# only way to reach the web port): requests it marks https are secure.
TRUST_X_FORWARDED_PROTO = env_bool("EVENTSCOPE_TRUST_X_FORWARDED_PROTO", False)
if TRUST_X_FORWARDED_PROTO:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Strict-Transport-Security on answers to HTTPS requests (never on plain HTTP).
SECURE_HSTS_SECONDS = env_int("EVENTSCOPE_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)

# ---- Eventscope: access security (sign-in lockout, audit log, headers) --------
# Kept together so the rest of this file stays untouched by it.
INSTALLED_APPS += [
    "axes",
    # After axes: its sign-in receivers must run first, so ours can tell a
    # locked-out attempt from a plain failure (dashboard/audit/signins.py).
    "dashboard.audit",
]
# Headers on every response (CSP, no-store) sit just inside SecurityMiddleware;
# axes turns a locked-out sign-in into its answer and must come last.
MIDDLEWARE.insert(1, "dashboard.security_headers.SecurityHeadersMiddleware")
MIDDLEWARE.append("axes.middleware.AxesMiddleware")
AUTHENTICATION_BACKENDS = [
    # Refuses any sign-in while the username or the address is locked out,
    # before the password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed sign-ins counted per username (from any address) and per address
# (for any username); either reaching the limit locks it out for the
# cool-off, and every attempt during it (right password too) is refused
# and restarts the cool-off.
AXES_FAILURE_LIMIT = env_int("EVENTSCOPE_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("EVENTSCOPE_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A success must not wipe the counters: they are kept per (username,
# address) row, so resetting by address would let anyone with an account
# clear the failures an attacker piled up against someone else's.
AXES_RESET_ON_SUCCESS = False
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "dashboard.accounts.signin.locked_out"
# The one client-address rule, shared with the audit log (dashboard/accounts/signin.py).
AXES_CLIENT_IP_CALLABLE = "dashboard.accounts.signin.client_ip"
# Sign-ins are recorded in the audit log; axes keeps only its counters.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
# axes logs every clean-up and success at INFO; the audit log says what matters.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}
# Reverse proxies in front of the web app that append to X-Forwarded-For;
# 0 trusts only the connection's own address.
PROXY_COUNT = env_int("EVENTSCOPE_PROXY_COUNT", 0, minimum=0)
AUDIT_RETENTION_DAYS = env_int("EVENTSCOPE_AUDIT_RETENTION_DAYS", 365, minimum=1)

# ---- Eventscope: dead letters and redrives ------------------------------------
# One redrive moves at most this many messages (a whole queue is planned up to it).
REDRIVE_MAX_MESSAGES = env_int("EVENTSCOPE_REDRIVE_MAX_MESSAGES", 10_000, minimum=1)
# The fastest rate a redrive may ask for, in messages per second.
REDRIVE_MAX_RATE = env_int("EVENTSCOPE_REDRIVE_MAX_RATE", 500, minimum=1)
