"""Projects, API tokens, and the telemetry tables. (Who may see a project is
the dashboard's business: dashboard/accounts/models.py.)

The telemetry tables (spans, stages, envelopes, flow rollups) are partitioned
or bulk-written with COPY, so their DDL lives in hand-written SQL migrations;
the models below are unmanaged views of them for the ORM and the admin of
read paths. Every telemetry row carries `project_id`: it is the tenant key
and, on a distributed PostgreSQL (Citus), the distribution column.
"""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "es_"


class Project(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @classmethod
    def default(cls):
        """The project that receives telemetry when ingest auth is off."""
        project, _ = cls.objects.get_or_create(
            slug=settings.DEFAULT_PROJECT, defaults={"name": settings.DEFAULT_PROJECT.title()}
        )
        return project


class Scope(models.TextChoices):
    INGEST = "ingest", "Ingest (send telemetry)"
    READ = "read", "Read (JSON API)"


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)

    def authenticate(self, plaintext: str, scope: str):
        """The active token with this secret and scope, or None."""
        if not plaintext or not plaintext.startswith(TOKEN_PREFIX):
            return None
        return (
            self.active()
            .filter(digest=ApiToken.digest_of(plaintext), scope=scope)
            .select_related("project")
            .first()
        )


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 digest is stored; the secret is shown once."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=Scope.choices)
    prefix = models.CharField(max_length=12, help_text="first characters, to recognise it")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.scope}, {self.prefix}…)"

    @staticmethod
    def digest_of(plaintext: str) -> str:
        # A fast hash is right here: the secret has 256 random bits, so there
        # is nothing to brute-force, and ingest checks it on every request.
        return hashlib.sha256(plaintext.encode()).hexdigest()

    @classmethod
    def issue(cls, project, name, scope, created_by=None):
        """Create a token; returns (token, plaintext). The plaintext is not kept."""
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            project=project,
            name=name,
            scope=scope,
            prefix=plaintext[:10],
            digest=cls.digest_of(plaintext),
            created_by=created_by,
        )
        return token, plaintext

    def revoke(self):
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])


# ---- Telemetry tables (DDL in migrations/0002_telemetry.py) -----------------


class Span(models.Model):
    """A raw span, partitioned by day on start_time."""

    pk = models.CompositePrimaryKey("project_id", "trace_id", "span_id", "start_time")
    project_id = models.IntegerField()
    trace_id = models.BinaryField()
    span_id = models.BinaryField()
    parent_span_id = models.BinaryField(null=True)
    start_time = models.DateTimeField()
    duration_ns = models.BigIntegerField()
    service = models.TextField()
    name = models.TextField()
    kind = models.SmallIntegerField()  # OTLP SpanKind: 1 internal .. 5 consumer
    status_code = models.SmallIntegerField()  # 0 unset, 1 ok, 2 error
    status_message = models.TextField(null=True)
    attributes = models.JSONField(null=True)
    resource = models.JSONField(null=True)
    events = models.JSONField(null=True)
    links = models.JSONField(null=True)  # [{"trace_id": hex, "span_id": hex, "attributes": {}}]
    scope = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = "collector_span"


class Stage(models.Model):
    """One step of an event's journey: published, received, processed, failed, ...

    Both messaging spans and CloudEvents envelopes become stages; everything
    downstream (flow graph, failures, journeys, alerts) reads these.
    """

    pk = models.CompositePrimaryKey("project_id", "dedupe_key", "time")
    project_id = models.IntegerField()
    time = models.DateTimeField()
    dedupe_key = models.BinaryField()
    stage = models.TextField()  # published|received|processed|failed|retried|deadlettered
    role = models.TextField()  # producer|consumer
    system = models.TextField()
    channel = models.TextField()
    service = models.TextField()
    consumer_group = models.TextField()
    trace_id = models.BinaryField(null=True)
    span_id = models.BinaryField(null=True)
    parent_span_id = models.BinaryField(null=True)
    linked_trace_ids = models.JSONField(null=True)  # bytea[] in SQL; read with raw SQL
    linked_span_ids = models.JSONField(null=True)
    event_id = models.TextField(null=True)
    event_source = models.TextField(null=True)
    event_type = models.TextField(null=True)
    error = models.TextField(null=True)
    duration_ms = models.FloatField(null=True)
    e2e_ms = models.FloatField(null=True)
    origin = models.SmallIntegerField()  # 1 span, 2 CloudEvent

    class Meta:
        managed = False
        db_table = "collector_stage"


class Envelope(models.Model):
    """A CloudEvents envelope with its (redacted, size-capped) payload."""

    pk = models.CompositePrimaryKey("project_id", "source", "event_id", "time")
    project_id = models.IntegerField()
    time = models.DateTimeField()
    source = models.TextField()
    event_id = models.TextField()
    type = models.TextField()
    subject = models.TextField(null=True)
    datacontenttype = models.TextField(null=True)
    dataschema = models.TextField(null=True)
    extensions = models.JSONField(null=True)
    data = models.JSONField(null=True)  # JSON payloads
    data_text = models.TextField(null=True)  # non-JSON payloads (text or base64)
    data_base64 = models.BooleanField(default=False)
    data_size = models.IntegerField()
    truncated = models.BooleanField(default=False)
    trace_id = models.BinaryField(null=True)

    class Meta:
        managed = False
        db_table = "collector_envelope"


class FlowRollup(models.Model):
    """Per-minute totals of one flow edge, upserted additively by the writer."""

    pk = models.CompositePrimaryKey(
        "project_id", "minute", "source", "target", "kind", "consumer_group"
    )
    project_id = models.IntegerField()
    minute = models.DateTimeField()
    source = models.TextField()  # node id: service:<name> or channel:<system>:<name>
    target = models.TextField()
    kind = models.TextField()  # publish|consume|call
    consumer_group = models.TextField()
    count = models.BigIntegerField()  # outcomes: published / processed+failed+deadlettered / calls
    received = models.BigIntegerField()  # consume side: receipts (receive spans, received stages)
    errors = models.BigIntegerField()
    deadlettered = models.BigIntegerField()
    retries = models.BigIntegerField()
    duration_hist = models.JSONField()  # bigint[]: counts per collector.histogram bucket
    duration_sum_ms = models.FloatField()
    e2e_hist = models.JSONField()  # bigint[]: produce→consume latency
    e2e_count = models.BigIntegerField()
    e2e_sum_ms = models.FloatField()

    class Meta:
        managed = False
        db_table = "collector_flowrollup"
