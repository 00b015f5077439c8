"""The one settings file. Everything an operator may change is read from the environment
through the typed readers in ``exchange.env``; a bad value stops start-up with the variable's name.
"""

import secrets
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from exchange import embedded, logs, pgwatch
from exchange.env import (
    celery_broker_url,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_networks,
    env_secret,
    env_str,
    parse_database_url,
    parse_public_url,
    parse_redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = embedded.var_dir()

DEBUG = env_bool("DEBUG", False)
PORT = env_int("PORT", 8000, minimum=1)
HASHX_PUBLIC_URL = parse_public_url(
    "HASHX_PUBLIC_URL", env_str("HASHX_PUBLIC_URL", f"http://127.0.0.1:{PORT}")
)
HASHX_EXCHANGE_NAME = env_str("HASHX_EXCHANGE_NAME", "Hash Exchange")
HASHX_EXCHANGE_KEY_FILE = env_str("HASHX_EXCHANGE_KEY_FILE")
HASHX_API_VERSION = "v1"


def _secret_key() -> str:
    value = env_secret("SECRET_KEY")
    if value:
        return value
    # No key given: keep one generated key in var/ so sessions survive restarts.
    path = VAR_DIR / "secret-key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()

_hostname = urlsplit(HASHX_PUBLIC_URL).hostname or ""
_public_host = f"[{_hostname}]" if ":" in _hostname else _hostname
# The public URL's host and loopback (healthchecks, `make run`) are always served; ALLOWED_HOSTS
# adds more (a proxy's or a compose service's name), it never takes these away.
ALLOWED_HOSTS = list(
    dict.fromkeys([_public_host, "127.0.0.1", "localhost", "[::1]", *env_list("ALLOWED_HOSTS", [])])
)
CSRF_TRUSTED_ORIGINS = [HASHX_PUBLIC_URL]
if HASHX_PUBLIC_URL.startswith("https://"):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
if env_bool("HASHX_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many reverse proxies append to X-Forwarded-For; 0 trusts only REMOTE_ADDR.
HASHX_TRUSTED_PROXIES = env_int("HASHX_TRUSTED_PROXIES", 0, minimum=0)

# --- services --------------------------------------------------------------------------------

_embedded = embedded.read_state(VAR_DIR)


def _service_url(name: str) -> str:
    value = env_str(name) or _embedded.get(name, "")
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set and no embedded service is running under {VAR_DIR}. "
            f"Set {name}, or run through `make run` / `python -m exchange.embedded -- COMMAND`."
        )
    return value


DATABASES = {"default": parse_database_url("DATABASE_URL", _service_url("DATABASE_URL"))}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# An optional streaming replica of DATABASE_URL's cluster (hot standby) that serves feed reads
# once it has replayed past what the reader needs (signals/feed/reads.py, README "Past one
# machine"). Run as a test database, it is the test database itself (MIRROR).
DATABASE_REPLICA_URL = env_str("DATABASE_REPLICA_URL")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = {
        **parse_database_url("DATABASE_REPLICA_URL", DATABASE_REPLICA_URL),
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"MIRROR": "default"},
    }
# The longest a web request (a Celery task) waits for PostgreSQL to answer one call, or to send
# the next row of a COPY, before its connection is cut and discarded: a frozen server answers
# 503 instead of hanging the request (exchange/pgwatch.py). 0 waits for ever.
HASHX_DATABASE_TIMEOUT_SECONDS = env_int("HASHX_DATABASE_TIMEOUT_SECONDS", 10, minimum=0)
HASHX_TASK_DATABASE_TIMEOUT_SECONDS = env_int("HASHX_TASK_DATABASE_TIMEOUT_SECONDS", 300, minimum=0)
for _database in DATABASES.values():
    _database["OPTIONS"].update(pgwatch.FACTORIES)  # type: ignore[attr-defined]
# After the replica could not be reached, this process leaves feed reads to the primary for
# this long before it tries the replica again (a dead host costs a connect timeout per try).
HASHX_REPLICA_RETRY_SECONDS = env_int("HASHX_REPLICA_RETRY_SECONDS", 10, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = parse_redis_url("REDIS_URL", _service_url("REDIS_URL"))
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "hashx",
        # A Redis that is down fails a request within seconds (503), never hangs it.
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }
}

CELERY_BROKER_URL = celery_broker_url(REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection after each task unless this is set, and
# a fresh PostgreSQL backend costs milliseconds of both sides' CPU (a fan-out runs dozens of short
# tasks). Set so it never does: exchange/celery.py applies Django's own rule around each task
# instead (CONN_MAX_AGE, and a health check of a connection that saw an error).
CELERY_DB_REUSE_MAX = 2**62
# A worker outlives any Redis outage: it reconnects for as long as it takes (Celery's default
# gives up after 100 attempts, about 45 minutes, and the worker exits), and a Redis error on a
# channel (loading its data after a restart, say) reconnects too instead of stopping it.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CHANNEL_ERROR_RETRY = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    # Without timeouts, a publish to a Redis that vanished without closing the connection waits
    # for ever (the consumer's BRPOP waits 1 s, well within them).
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# One queue per kind of work (DESIGN.md "Scale-out"); a worker consumes all of them unless
# started with -Q.
CELERY_TASK_QUEUES = [Queue("default"), Queue("audit"), Queue("ingest"), Queue("webhooks")]
CELERY_TASK_QUEUES += [Queue("federation"), Queue("fanout")]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    # Exact names win over patterns: beat's check for stalled batches must not wait behind them.
    "signals.ingest.resume_batches": {"queue": "default"},
    # Nor the dispatch behind the sends of the fan-out before (a worker takes from its queues in
    # turn): a merge's wake-up cuts and starts its pages within a task or two, not after them all.
    "signals.webhooks.dispatch": {"queue": "fanout"},
    "audit.*": {"queue": "audit"},
    "signals.ingest.*": {"queue": "ingest"},
    "signals.webhooks.*": {"queue": "webhooks"},
    "federation.*": {"queue": "federation"},
}
# How often a worker writes its liveness heartbeat to Redis (readyz reads it).
HASHX_WORKER_HEARTBEAT_SECONDS = env_int("HASHX_WORKER_HEARTBEAT_SECONDS", 10, minimum=1)

# --- Django ----------------------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "exchange",
    "members",
    "signals",
    "audit",
    "taxii",
    "ops",
    "federation",
]

MIDDLEWARE = [
    "exchange.middleware.RequestIdMiddleware",
    "exchange.observe.ObserveMiddleware",
    "exchange.middleware.ProblemMiddleware",
    "exchange.middleware.RefuseNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's own, passed by on the paths machines reach (signed API, feeds, federation).
    "exchange.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "exchange.middleware.AuthenticationMiddleware",
    "exchange.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "exchange.urls"
CSRF_FAILURE_VIEW = "exchange.problems.csrf_failure"
WSGI_APPLICATION = "exchange.wsgi.application"
APPEND_SLASH = False

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

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Request signatures: how far ``created`` may be from the exchange's clock, either way.
HASHX_SIGNATURE_MAX_SKEW_SECONDS = env_int("HASHX_SIGNATURE_MAX_SKEW_SECONDS", 300, minimum=5)

# Tombstones stay in the change feed this long, then beat purges them (cursors older: 410).
HASHX_TOMBSTONE_RETENTION_DAYS = env_int("HASHX_TOMBSTONE_RETENTION_DAYS", 90, minimum=1)

# Matching (signals/matching): PDQ index generations are written here and memory-mapped by
# every process; each process follows the change feed at most this often (milliseconds) before
# answering, and beat compacts a new generation this often (seconds).
HASHX_MATCH_DIR = Path(env_str("HASHX_MATCH_DIR") or VAR_DIR / "match")
HASHX_MATCH_REFRESH_MS = env_int("HASHX_MATCH_REFRESH_MS", 1000, minimum=0)
HASHX_MATCH_COMPACT_SECONDS = env_int("HASHX_MATCH_COMPACT_SECONDS", 300, minimum=10)
# Link new PDQ entries to their nearest older neighbour after each merge, in a task of its own
# (signals.actions.neardup): about 50-170 µs per new PDQ hash against 0.2-2M entries.
HASHX_MATCH_NEAR_DUPLICATES = env_bool("HASHX_MATCH_NEAR_DUPLICATES", True)
# A batch's merge is split into this many parts of the value space, merged in parallel (one
# database connection each): a divisor of 8 (signals.feed.locks.PART_COUNTS).
HASHX_MERGE_PARTS = int(env_choice("HASHX_MERGE_PARTS", "2", {"1", "2", "4", "8"}))

# Audit: details larger than this (canonical JSON bytes) are replaced by a truncation marker.
HASHX_AUDIT_MAX_DETAILS_BYTES = env_int("HASHX_AUDIT_MAX_DETAILS_BYTES", 8192, minimum=256)
HASHX_AUDIT_CHECKPOINT_SECONDS = env_int("HASHX_AUDIT_CHECKPOINT_SECONDS", 300, minimum=10)

# Request bodies past this size answer 413; bulk uploads stream instead (signals/api/uploads.py).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("HASHX_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)

# Webhooks (DESIGN.md "Push"). Outbound requests go only to public addresses: loopback, private,
# link-local, CGNAT and metadata addresses are refused unless a network here admits them
# (tests and development: "127.0.0.0/8,::1/128"); cloud metadata addresses never are.
HASHX_OUTBOUND_ALLOWED_NETWORKS = env_networks("HASHX_OUTBOUND_ALLOWED_NETWORKS")
HASHX_WEBHOOK_ALLOW_HTTP = env_bool("HASHX_WEBHOOK_ALLOW_HTTP", False)
HASHX_WEBHOOK_TIMEOUT_SECONDS = env_int("HASHX_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
HASHX_WEBHOOK_PAGE_SIZE = env_int("HASHX_WEBHOOK_PAGE_SIZE", 500, minimum=1)
HASHX_WEBHOOK_RETRY_BASE_SECONDS = env_int("HASHX_WEBHOOK_RETRY_BASE_SECONDS", 10, minimum=1)
HASHX_WEBHOOK_RETRY_MAX_SECONDS = env_int("HASHX_WEBHOOK_RETRY_MAX_SECONDS", 3600, minimum=1)
# A claimed delivery whose worker died is claimed again after this long; one send may take half
# of it in all (signals.actions.webhooks.send_deadline).
HASHX_WEBHOOK_LEASE_SECONDS = env_int("HASHX_WEBHOOK_LEASE_SECONDS", 60, minimum=3)
# Deliveries one send task sends at once, a thread each (the dispatch hands out claimed
# deliveries in tasks of this many).
HASHX_WEBHOOK_SEND_BATCH = env_int("HASHX_WEBHOOK_SEND_BATCH", 50, minimum=1)
# An endpoint failing this long is disabled, and its organisation and staff see why.
HASHX_WEBHOOK_DISABLE_AFTER_HOURS = env_int("HASHX_WEBHOOK_DISABLE_AFTER_HOURS", 72, minimum=1)
# Finished deliveries (and their bodies) are kept this long for the deliveries list.
HASHX_WEBHOOK_HISTORY_DAYS = env_int("HASHX_WEBHOOK_HISTORY_DAYS", 14, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "members.auth.SignatureAuthentication",
        # A feed token anywhere but the feed endpoints (which accept it) is refused with a reason.
        "members.tokens.RefuseFeedTokens",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["members.principal.IsMember"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["exchange.bodies.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "exchange.problems.exception_handler",
    # Each organisation's requests-per-second quota (members/quotas.py).
    "DEFAULT_THROTTLE_CLASSES": ["members.quotas.RequestRate"],
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Hash Exchange API",
    "DESCRIPTION": (
        "Share hashes of abusive content between coalition members: sets, publishing, change "
        "feed, webhooks, matching. Errors are RFC 9457 problem documents."
    ),
    "VERSION": HASHX_API_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "state": name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "BatchStateEnum": "signals.models.Batch.State",
        "SubscriptionStateEnum": "signals.models.Subscription.State",
        "DeliveryStateEnum": "signals.models.Delivery.State",
    },
}

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
# Logs: structlog, one line per request and per task with its request id (exchange/logs.py);
# text for a terminal (`make run`), json for a log pipeline (compose).
HASHX_LOG_FORMAT = env_choice("HASHX_LOG_FORMAT", "text", {"TEXT", "JSON"}).lower()
logs.configure()
LOGGING = logs.logging_config(LOG_LEVEL, HASHX_LOG_FORMAT)

# Prometheus /metrics (exchange/metrics.py) answers only `Authorization: Bearer <token>`; without
# a token it is off (404). Every process writes its samples under PROMETHEUS_MULTIPROC_DIR
# ($HASHX_VAR_DIR/metrics unless set; exchange/metrics.py chooses it).
HASHX_METRICS_TOKEN = env_secret("HASHX_METRICS_TOKEN")

# Federation (federation/): how often beat pulls each peer (failures back off from there).
HASHX_FEDERATION_PULL_SECONDS = env_int("HASHX_FEDERATION_PULL_SECONDS", 60, minimum=1)
# Push-assist: hold a subscription at each peer whose webhooks wake a pull at once.
HASHX_FEDERATION_PUSH = env_bool("HASHX_FEDERATION_PUSH", True)
