"""The one settings class. Built once, in a service's `main()`, from `FEEDBACKLOOP_*` variables.

Nothing in `libs/` constructs it: libraries take the values they need as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedbackloop.contract import TopicNames
from feedbackloop.kafka import KafkaConnection

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "placeholder", "dev"})


class Settings(BaseSettings):
    """Every setting of every service. Environment variables are `FEEDBACKLOOP_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="FEEDBACKLOOP_", extra="ignore", frozen=True)

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

    # Query.
    query_port: int = 8001

    # Consumers.
    profiles_port: int = 8002
    learner_port: int = 8003
    trainer_port: int = 8004
    metrics_port: int = 8005
    consumer_max_records: int = Field(default=500, ge=1)
    consumer_batch_timeout_ms: int = Field(default=200, ge=1)
    consumer_retry_max_seconds: float = Field(default=5.0, gt=0)

    # Embedded infrastructure (used by `feedbackloop run` only).
    embedded_kafka_port: int = 9092
    embedded_postgres_port: int = 54329
    embedded_s3_port: int = 8333
    embedded_seaweed_port_base: int = 19400
    embedded_broker_storage: Literal["s3", "memory"] = "s3"

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
