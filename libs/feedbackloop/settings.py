"""The one settings class. Built once, in a service's `main()`, from `FEEDBACKLOOP_*` variables.

Nothing in `libs/` constructs it: libraries take the values they need as arguments.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedbackloop.contract import TopicNames
from feedbackloop.kafka import EventPublisher, KafkaConnection

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "placeholder", "dev"})


def webhooks_secret_key_is_valid(value: str) -> bool:
    """Empty (the key is derived), or 32 bytes in base64 that are not all one byte value;
    blanks around it are ignored (a key file's newline)."""
    if not value.strip():
        return True
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        return False
    return len(key) == 32 and len(set(key)) > 1


def webhooks_previous_secret_keys(value: str) -> list[str]:
    """The keys of FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS: comma-separated, each in the form
    of FEEDBACKLOOP_WEBHOOKS_SECRET_KEY; blanks around and between them are ignored."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


class Settings(BaseSettings):
    """Every setting of every service. Environment variables are `FEEDBACKLOOP_<NAME>`."""

    # An error's input would be every setting (the whole environment, for a check of the
    # model), keys and secrets included: errors say what is wrong, never what was given.
    model_config = SettingsConfigDict(env_prefix="FEEDBACKLOOP_", extra="ignore", frozen=True,
                                      hide_input_in_errors=True)

    environment: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    data_dir: Path = Path(".data")

    # Kafka. Empty bootstrap servers: `feedbackloop run` starts the embedded broker.
    kafka_bootstrap_servers: str = ""
    kafka_topic_prefix: str = "feedbackloop"
    kafka_partitions: int = Field(default=6, ge=1, le=1_000)
    kafka_replication_factor: int = Field(default=1, ge=1, le=7)
    kafka_enable_idempotence: bool = True
    kafka_linger_ms: int = Field(default=5, ge=0, le=1_000)
    kafka_request_timeout_ms: int = Field(default=10_000, ge=1_000)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    # Postgres. Empty URL: `feedbackloop run` starts the embedded server.
    database_url: SecretStr = SecretStr("")
    database_pool_min: int = Field(default=1, ge=0)
    database_pool_max: int = Field(default=10, ge=1)

    # Secrets.
    user_id_hmac_secret: SecretStr = SecretStr("")
    dev_api_key: SecretStr | None = None

    # Ingest.
    ingest_port: int = 8000
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    retry_after_seconds: int = Field(default=2, ge=1)
    max_batch_events: int = Field(default=1_000, ge=1)
    max_batch_bytes: int = Field(default=1_048_576, ge=1_024)
    max_event_bytes: int = Field(default=1_048_576, ge=1_024)
    api_key_cache_seconds: float = Field(default=2.0, ge=0)
    # OTLP/HTTP traces on ingest: a GenAI span's response id is its span id, or this attribute.
    otlp_response_id_attribute: str = ""

    # Query.
    query_port: int = 8001

    # Consumers.
    profiles_port: int = 8002
    learner_port: int = 8003
    trainer_port: int = 8004
    metrics_port: int = 8005
    webhooks_port: int = 8006
    consumer_max_records: int = Field(default=500, ge=1)
    consumer_batch_timeout_ms: int = Field(default=200, ge=1)
    consumer_retry_max_seconds: float = Field(default=5.0, gt=0)

    # Embedded infrastructure (used by `feedbackloop run` only).
    embedded_kafka_port: int = 9092
    embedded_postgres_port: int = 54329
    embedded_s3_port: int = 8333
    embedded_seaweed_port_base: int = 19400
    embedded_broker_storage: Literal["s3", "memory"] = "s3"

    # Learner: batched refits of the segment weights (see services/learner/learning.py).
    learner_refit_min_new_choices: int = Field(default=50, ge=1)
    learner_refit_interval_seconds: float = Field(default=300.0, gt=0)
    learner_refit_poll_seconds: float = Field(default=1.0, gt=0)
    learner_refit_max_choices: int = Field(default=20_000, ge=10)
    learner_min_choices: int = Field(default=30, ge=1)
    learner_pooling_sd: float = Field(default=1.0, gt=0)
    learner_min_weight: float = Field(default=0.02, ge=0, lt=1)
    learner_max_weight: float = Field(default=0.8, gt=0, le=1)
    # Between refits: incremental updates every poll, checked off-policy before they are
    # served; shift detection; per-customer weights (services/learner/adaptive.py).
    learner_incremental: bool = True
    learner_offpolicy_sessions: int = Field(default=2_000, ge=10)
    learner_offpolicy_min_sessions: int = Field(default=30, ge=1)
    learner_offpolicy_margin: float = Field(default=0.0, ge=0, le=1)
    learner_shift_alpha: float = Field(default=1e-3, gt=0, lt=1)
    learner_customer_min_choices: int = Field(default=50, ge=1)
    learner_customer_pooling_sd: float = Field(default=0.5, gt=0)
    learner_customer_min_confidence: float = Field(default=0.5, ge=0, le=1)

    # Metrics: how late (received_at - occurred_at) an event may be reported and still land in
    # the minute it occurred; later ones are counted in the oldest minute the window allows.
    metrics_lateness_seconds: int = Field(default=172_800, ge=0)

    # Alerts, evaluated by the query service over the exact rollups. Each rule needs at least
    # its minimum sample in the window, and must hold for `alert_for_seconds` before firing.
    alert_evaluation_interval_seconds: float = Field(default=60.0, gt=0)
    alert_window_minutes: int = Field(default=60, ge=1)
    alert_for_seconds: int = Field(default=300, ge=0)
    # An endpoint of the webhooks service receiving every tenant's alert.state_changed,
    # signed with `alert_webhook_secret` (a `whsec_` secret; derived from the URL when unset).
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None
    # The query service's relay of alert state changes onto the alerts topic (an outbox).
    alert_relay_interval_seconds: float = Field(default=1.0, gt=0)
    alert_approval_min_rate: float = Field(default=0.8, ge=0, le=1)
    alert_approval_min_samples: int = Field(default=20, ge=1)
    alert_approval_max_drop: float = Field(default=0.15, gt=0, le=1)
    alert_negative_spike_factor: float = Field(default=3.0, gt=1)
    alert_negative_spike_min_count: int = Field(default=10, ge=1)
    alert_conversion_min_rate: float = Field(default=0.6, ge=0, le=1)
    alert_conversion_min_sessions: int = Field(default=20, ge=1)
    alert_chosen_rank_max: float = Field(default=2.0, ge=1)
    alert_satisfaction_min: float = Field(default=3.5, ge=1, le=5)
    alert_choice_min_samples: int = Field(default=20, ge=1)
    alert_new_action_type_days: int = Field(default=7, ge=1)
    alert_new_action_type_min_down: int = Field(default=10, ge=1)
    # Label values the query service's analytics gauges may carry; any other is `other`.
    analytics_label_action_types: tuple[str, ...] = ()
    analytics_label_models: tuple[str, ...] = ()

    # Webhooks: signed deliveries to each tenant's endpoints (services/webhooks). Attempt n
    # that fails is retried after `_retry_base_seconds * 2**(n-1)`, at most `_retry_max_seconds`;
    # the `_max_attempts`-th failure makes the delivery dead (replayable).
    webhooks_max_attempts: int = Field(default=10, ge=1, le=100)
    webhooks_retry_base_seconds: float = Field(default=10.0, gt=0)
    webhooks_retry_max_seconds: float = Field(default=3_600.0, gt=0)
    webhooks_timeout_seconds: float = Field(default=10.0, gt=0)
    webhooks_delivery_interval_seconds: float = Field(default=1.0, gt=0)
    webhooks_delivery_batch_size: int = Field(default=100, ge=1, le=1_000)
    # Endpoints on loopback, private, link-local and other non-public addresses are refused
    # (when created, and when a delivery resolves its host) unless this is true: a tenant's URL
    # must not reach the platform's own network. `feedbackloop run` sets it for its local system.
    webhooks_allow_private_networks: bool = False
    # Delivered deliveries are deleted this long after delivery, and published alert changes
    # (the query service's outbox) this long after publication; dead ones are kept (replayable).
    webhooks_delivered_retention_days: float = Field(default=30.0, gt=0)
    alert_changes_retention_days: float = Field(default=7.0, gt=0)
    webhooks_prune_interval_seconds: float = Field(default=3_600.0, gt=0)
    # The AES-256-GCM key endpoints' signing secrets are encrypted with at rest: 32 random
    # bytes in base64 (`openssl rand -base64 32`). Empty: a key derived from the user-id HMAC
    # secret (under a label of its own), so the services and the CLI agree wherever they run.
    # New secrets are sealed under it; to rotate it, move the old key to
    # `webhooks_previous_secret_keys` (see the README). When it is set, the derived key is
    # still tried last, so a system that ran without one reads its secrets after setting it.
    webhooks_secret_key: SecretStr = SecretStr("")
    # Keys secrets may still be sealed under (comma-separated, in the form above): opening tries
    # the current key, then these in order. `feedbackloop webhooks reseal` seals what they open
    # under the current key; the delivery job never does (see the README).
    webhooks_previous_secret_keys: SecretStr = SecretStr("")

    # Trainer: the relay publishing stored training examples on the training-examples topic.
    training_relay_batch_size: int = Field(default=500, ge=1)
    training_relay_interval_seconds: float = Field(default=1.0, gt=0)
    # Failure explanations by an OpenAI-compatible chat model. Off: no call is ever made.
    failure_explanations_enabled: bool = False
    failure_explanations_base_url: str | None = None
    failure_explanations_api_key: SecretStr | None = None
    failure_explanations_model: str = "gpt-4o-mini"
    failure_explanations_requests_per_minute: float = Field(default=30.0, gt=0)
    failure_explanations_timeout_seconds: float = Field(default=30.0, gt=0)
    # Retraining: every interval, the worst prompts' examples (more than `min_not_useful`
    # not-useful signals in the last interval) are exported for review or fine-tuned on.
    retraining_enabled: bool = False
    retraining_interval_seconds: float = Field(default=604_800.0, gt=0)
    retraining_min_not_useful: int = Field(default=5, ge=0)
    retraining_mode: Literal["review", "fine_tune"] = "review"
    retraining_method: Literal["supervised", "dpo"] = "supervised"
    retraining_export_dir: Path = Path(".data/retraining")
    retraining_provider: str = "openai"
    retraining_base_url: str | None = None
    retraining_api_key: SecretStr | None = None
    retraining_model: str = "gpt-4o-mini-2024-07-18"

    # Exports to S3-compatible object storage (the trainer): training examples and the feedback
    # events and responses they came from, as JSONL and Parquet with a manifest, incremental by
    # the time they were stored. Off without an endpoint; `feedbackloop run` points it at its
    # SeaweedFS. `_interval_seconds` 0: on demand only (`feedbackloop export-objects`).
    object_export_endpoint: str = ""
    object_export_bucket: str = "feedbackloop"
    object_export_prefix: str = "exports"
    object_export_region: str = "us-east-1"
    object_export_access_key_id: SecretStr = SecretStr("")
    object_export_secret_access_key: SecretStr = SecretStr("")
    object_export_allow_http: bool = False
    object_export_interval_seconds: float = Field(default=3_600.0, ge=0)
    # Only what was stored at least this long ago is exported, so a transaction still open
    # when an increment is cut cannot commit rows into a stretch already exported.
    object_export_settle_seconds: float = Field(default=60.0, ge=0)
    # An increment is written as parts of at most this many rows, each uploaded before the next
    # is read: the rows in memory are one part's. What grows with the increment stays: every
    # row's id, the retracted list, each part's users' filter and the manifest written from
    # them (about 9 MiB of ids and 4.5 MiB of manifest per 100,000 rows). Measured peak for
    # 300,000 rows: 2232 MiB written whole, 573 MiB in parts of 50,000.
    object_export_part_rows: int = Field(default=50_000, ge=1)

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        missing = []
        if self.user_id_hmac_secret.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            missing.append("FEEDBACKLOOP_USER_ID_HMAC_SECRET")
        elif len(self.user_id_hmac_secret.get_secret_value()) < 32:
            missing.append("FEEDBACKLOOP_USER_ID_HMAC_SECRET (at least 32 characters)")
        if not self.database_url.get_secret_value():
            missing.append("FEEDBACKLOOP_DATABASE_URL")
        if not self.kafka_bootstrap_servers:
            missing.append("FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS")
        if self.dev_api_key is not None:
            missing.append("FEEDBACKLOOP_DEV_API_KEY must not be set in production")
        token_secret = self.feedback_token_secret.get_secret_value()
        if token_secret and (token_secret.lower() in PLACEHOLDER_SECRETS or len(token_secret) < 32):
            missing.append("FEEDBACKLOOP_FEEDBACK_TOKEN_SECRET (at least 32 characters, or empty)")
        if self.widget_demo_tenant:
            missing.append("FEEDBACKLOOP_WIDGET_DEMO_TENANT must not be set in production")
        if not webhooks_secret_key_is_valid(self.webhooks_secret_key.get_secret_value()):
            missing.append("FEEDBACKLOOP_WEBHOOKS_SECRET_KEY (32 random bytes in base64, or empty)")
        previous = webhooks_previous_secret_keys(self.webhooks_previous_secret_keys.get_secret_value())
        if not all(webhooks_secret_key_is_valid(key) for key in previous):
            missing.append("FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS (comma-separated keys, "
                           "each 32 random bytes in base64)")
        if missing:
            raise ValueError("production settings are incomplete: " + ", ".join(missing))
        return self

    def require_runtime(self) -> None:
        """Services need a broker, a database and the HMAC secret; say which is missing."""
        missing = [
            name
            for name, value in (
                ("FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS", self.kafka_bootstrap_servers),
                ("FEEDBACKLOOP_DATABASE_URL", self.database_url.get_secret_value()),
                ("FEEDBACKLOOP_USER_ID_HMAC_SECRET", self.user_id_hmac_secret.get_secret_value()),
            )
            if not value
        ]
        if missing:
            raise ValueError("missing settings: " + ", ".join(missing))

    def kafka_connection(self) -> KafkaConnection:
        password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
        return KafkaConnection(
            bootstrap_servers=self.kafka_bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=password,
        )

    def topic_names(self) -> TopicNames:
        return TopicNames(self.kafka_topic_prefix)

    def event_publisher(self) -> EventPublisher:
        """A producer with the configured idempotence, batching and timeouts (not started)."""
        return EventPublisher(
            self.kafka_connection(),
            enable_idempotence=self.kafka_enable_idempotence,
            linger_ms=self.kafka_linger_ms,
            request_timeout_ms=self.kafka_request_timeout_ms,
            timeout_seconds=self.publish_timeout_seconds,
        )

    # Rate limiting per API key (ingest and query): a token bucket of `rate_limit_burst` requests
    # refilled at `rate_limit_requests_per_second`; over it, 429 with Retry-After. Buckets live in
    # each process, so the limit is per replica. 0 requests per second disables it.
    rate_limit_requests_per_second: float = Field(default=1_000.0, ge=0)
    rate_limit_burst: int = Field(default=2_000, ge=1)
    # Web pages allowed to call ingest's POST /v1/feedback with a browser-safe `feedback` key
    # (CORS). Exact origins such as "https://app.example.com"; empty: no cross-origin calls.
    cors_allowed_origins: tuple[str, ...] = ()
    cors_max_age_seconds: int = Field(default=600, ge=0)
    # Signed feedback tokens (ingest): a product's backend mints one per response with an
    # `ingest` key (POST /v1/feedback/tokens); a page sends feedback on that response only, until
    # it expires. Verified statelessly with this HMAC key; empty: a key derived from the user-id
    # HMAC secret.
    feedback_token_secret: SecretStr = SecretStr("")
    feedback_token_default_ttl_seconds: int = Field(default=3_600, ge=10)
    feedback_token_max_ttl_seconds: int = Field(default=86_400, ge=10)
    # The feedback widget's bundles, served at /widget/v1/ (empty: libs/widget/dist of the
    # source tree), and the tenant whose sample chat /widget/demo shows (empty: no demo page).
    widget_dir: Path | None = None
    widget_demo_tenant: str | None = None
    # The review console (query service, /console/): its built assets (empty: libs/console/dist
    # of the source tree), the ingest service it publishes reviews and corrections through
    # (empty: http://<host>:<ingest_port>), and how long a sign-in lasts unused.
    console_dir: Path | None = None
    console_ingest_url: str | None = None
    console_session_idle_seconds: int = Field(default=8 * 3_600, ge=60)

    # Learning-confidence alert (query service): a segment whose newest learned weights have a
    # confidence below `alert_learning_confidence_min`, fitted on at least `_min_samples`
    # choices, for `_for_seconds` on end. A segment's first fits are uncertain by nature; one
    # still uncertain after a day learns nothing from its choices. Mirrored in
    # deploy/prometheus/rules/analytics.yml (FeedbackloopLearningConfidenceLow).
    alert_learning_confidence_min: float = Field(default=0.5, ge=0, le=1)
    alert_learning_confidence_min_samples: int = Field(default=30, ge=1)
    alert_learning_confidence_for_seconds: int = Field(default=86_400, ge=0)
    # How long `learning_preference_shift` fires after the learner detected a shift.
    alert_learning_shift_window_seconds: int = Field(default=21_600, ge=1)
