"""`feedbackloop run`: the whole system on one machine.

Starts what is not configured externally (PostgreSQL, SeaweedFS and the Tansu broker as local
processes), applies migrations, creates topics, registers the development API key, then runs
the seven services as child processes. Every part it started is supervised the same way: one
that dies is reaped, reported, and restarted with backoff (1 s doubling to 30 s, reset once it
has run for a minute); its state is kept in `<data dir>/system.json` for `feedbackloop status`. Ctrl-C
drains in order: ingest first, then the consumers (each finishes and commits its batch), then
query, then the broker and the stores.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from pathlib import Path

from feedbackloop.embedded import EmbeddedPostgres, SeaweedS3, TansuBroker
from feedbackloop.http.auth import ALL_SCOPES
from feedbackloop.settings import Settings
from services.cli import admin, local_system
from services.cli.processes import Part, ServiceProcess, exit_code_of

SERVICE_ORDER = ("ingest", "profiles", "learner", "trainer", "metrics", "webhooks", "query")
DRAIN_ORDER = (
    ("ingest",), ("profiles", "learner", "trainer", "metrics", "webhooks"), ("query",),
)
DEV_TENANT = "dev"
STABLE_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 30.0


def _local_secrets(data_dir: Path) -> dict[str, str]:
    """The HMAC secret and development key kept in the data directory, so that a restart
    hashes user ids the same way and the printed key keeps working."""
    path = data_dir / "local-secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    stored = {"user_id_hmac_secret": secrets.token_urlsafe(48)}
    path.write_text(json.dumps(stored))
    path.chmod(0o600)
    return stored


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.postgres: EmbeddedPostgres | None = None
        self.seaweed: SeaweedS3 | None = None
        self.broker: TansuBroker | None = None
        self.services: list[ServiceProcess] = []
        self.parts: list[Part] = []
        self.system: tuple[str, str, bool] | None = None  # database, bootstrap, embedded broker
        self.stopping = False

    def say(self, text: str) -> None:
        print(text, flush=True)

    def start_infrastructure(self) -> tuple[str, str, bool]:
        """Returns (database URL, bootstrap servers, whether the broker is embedded)."""
        settings = self.settings
        database_url = settings.database_url.get_secret_value()
        if not database_url:
            self.postgres = EmbeddedPostgres(
                self.data_dir / "postgres", settings.embedded_postgres_port
            )
            self.postgres.log_path = self.logs / "postgres.log"
            self.say(f"  postgres   starting on 127.0.0.1:{settings.embedded_postgres_port} "
                     f"(data in {self.postgres.data_dir})")
            self.postgres.start()
            database_url = self.postgres.url
        bootstrap = settings.kafka_bootstrap_servers
        embedded_broker = not bootstrap
        if embedded_broker:
            s3_endpoint = None
            if settings.embedded_broker_storage == "s3":
                self.seaweed = SeaweedS3(
                    self.data_dir / "seaweedfs",
                    s3_port=settings.embedded_s3_port,
                    port_base=settings.embedded_seaweed_port_base,
                    bucket="tansu",
                )
                self.seaweed.log_path = self.logs / "seaweedfs.log"
                self.say(f"  seaweedfs  starting (S3 on 127.0.0.1:{settings.embedded_s3_port})")
                self.seaweed.start()
                s3_endpoint = self.seaweed.endpoint
            self.broker = TansuBroker(
                self.logs / "tansu.log", settings.embedded_kafka_port, s3_endpoint=s3_endpoint
            )
            self.say(f"  broker     starting on 127.0.0.1:{settings.embedded_kafka_port} "
                     f"({'durable, in SeaweedFS' if s3_endpoint else 'in memory'})")
            self.broker.start()
            bootstrap = self.broker.bootstrap_servers
        return database_url, bootstrap, embedded_broker

    def run(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.say("feedbackloop: starting")
        try:
            return self._run()
        finally:
            self.shutdown()

    def _run(self) -> int:
        settings = self.settings
        database_url, bootstrap, embedded_broker = self.start_infrastructure()
        if self.stopping:
            return 0
        self.system = (database_url, bootstrap, embedded_broker)
        self._record_state()
        applied = asyncio.run(admin.migrate(database_url))
        self.say(f"  migrations applied: {', '.join(applied) or 'none new'}")
        created = self._create_topics(bootstrap)
        self.say(f"  topics created: {len(created)} (of {len(settings.topic_names().all_physical())})")
        local = _local_secrets(self.data_dir)
        dev_key = self._dev_key(database_url, local)
        env = self._service_env(database_url, bootstrap, embedded_broker, local)
        for name in SERVICE_ORDER:
            service = ServiceProcess(
                name, getattr(settings, f"{name}_port"), env, self.logs / f"{name}.log"
            )
            service.start()
            self.services.append(service)
        self.parts = self._infrastructure_parts(bootstrap) + [
            self._service_part(service) for service in self.services
        ]
        self._record_state()
        self._wait_ready()
        if self.stopping:
            return 0
        self._announce(dev_key, demo=bool(env.get("FEEDBACKLOOP_WIDGET_DEMO_TENANT")),
                       private_webhooks=env.get(
                           "FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "").lower() == "true")
        return self._supervise()

    def _dev_key(self, database_url: str, local: dict[str, str]) -> str:
        """The development tenant's API key: the configured one, else the one kept in the data
        directory, else a new one (kept there for the next start)."""
        settings = self.settings
        dev_key = settings.dev_api_key.get_secret_value() if settings.dev_api_key else None
        dev_key = dev_key or local.get("dev_api_key")
        _, dev_key = asyncio.run(
            admin.create_key(
                database_url,
                tenant_id=DEV_TENANT,
                name="development",
                scopes=list(ALL_SCOPES),
                key=dev_key,
            )
        )
        if not settings.dev_api_key and local.get("dev_api_key") != dev_key:
            local["dev_api_key"] = dev_key
            (self.data_dir / "local-secrets.json").write_text(json.dumps(local))
        return dev_key

    def _service_env(
        self, database_url: str, bootstrap: str, embedded_broker: bool, local: dict[str, str]
    ) -> dict[str, str]:
        """The environment every service process starts with."""
        settings = self.settings
        hmac_secret = settings.user_id_hmac_secret.get_secret_value() or local[
            "user_id_hmac_secret"
        ]
        env = dict(os.environ) | {
            "FEEDBACKLOOP_DATABASE_URL": database_url,
            "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FEEDBACKLOOP_USER_ID_HMAC_SECRET": hmac_secret,
        }
        if settings.environment == "development":
            # The widget's demo page, a sample chat of the development tenant.
            env.setdefault("FEEDBACKLOOP_WIDGET_DEMO_TENANT", DEV_TENANT)
            # A local system's webhook receivers are on this machine: allowed here, and said so.
            env.setdefault("FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "true")
        if embedded_broker:
            # The embedded broker cannot issue producer ids; consumers are idempotent instead.
            env["FEEDBACKLOOP_KAFKA_ENABLE_IDEMPOTENCE"] = "false"
        env |= {f"FEEDBACKLOOP_OBJECT_EXPORT_{name.upper()}": str(value).lower()
                if isinstance(value, bool) else str(value)
                for name, value in self._object_export().items()}
        return env

    def _announce(self, dev_key: str, *, demo: bool, private_webhooks: bool) -> None:
        settings = self.settings
        host = settings.host
        self.say("")
        self.say("feedbackloop is ready")
        self.say(f"  ingest   http://{host}:{settings.ingest_port}   (docs: /docs)")
        self.say(f"  query    http://{host}:{settings.query_port}   (docs: /docs)")
        for name in ("profiles", "learner", "trainer", "metrics", "webhooks"):
            port = getattr(settings, f"{name}_port")
            self.say(f"  {name:<8} http://{host}:{port}   (/readyz, /metrics, /asyncapi.json)")
        if demo:
            self.say(f"  demo     http://{host}:{settings.ingest_port}/widget/demo   "
                     "(the feedback widget on a sample chat)")
        self.say(f"  widget   http://{host}:{settings.ingest_port}/widget/v1/feedbackloop.js")
        self.say(f"  console  http://{host}:{settings.query_port}/console/   "
                 "(review queue and analytics: sign in with the API key below)")
        self.say(f"  logs     {self.logs}")
        if private_webhooks:
            self.say("  webhooks may go to private and loopback addresses "
                     "(FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS=true, for local receivers)")
        self.say(f"  API key  {dev_key}   (tenant '{DEV_TENANT}', all scopes)")
        self.say("")
        self.say("Try:")
        self.say(
            f"  curl -s -X POST http://{host}:{settings.ingest_port}/v1/feedback "
            f"-H 'Authorization: Bearer {dev_key}' -H 'Content-Type: application/json' "
            "-d '{\"response_id\": \"r1\", \"thumb\": \"up\", \"user_id\": \"u1\"}'"
        )
        self.say(
            f"  curl -s http://{host}:{settings.query_port}/v1/analytics/approval "
            f"-H 'Authorization: Bearer {dev_key}'"
        )
        self.say("Press Ctrl-C to stop.")

    def _create_topics(self, bootstrap: str) -> list[str]:
        settings = self.settings
        connection = settings.model_copy(
            update={"kafka_bootstrap_servers": bootstrap}
        ).kafka_connection()
        return asyncio.run(
            admin.create_topics(
                connection,
                settings.topic_names(),
                partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
        )

    def _infrastructure_parts(self, bootstrap: str) -> list[Part]:
        """The embedded processes, in the order they depend on each other."""
        parts = []
        if self.postgres is not None:
            postgres = self.postgres
            parts.append(Part("postgres", lambda: exit_code_of(postgres.process), postgres.start,
                              postgres.log_path))
        if self.seaweed is not None:
            seaweed = self.seaweed
            parts.append(Part("seaweedfs", lambda: exit_code_of(seaweed.process), seaweed.start,
                              seaweed.log_path))
        if self.broker is not None:
            broker = self.broker

            def recreate_topics() -> str | None:
                if broker.s3_endpoint:
                    return "its log is in SeaweedFS: nothing lost"
                created = self._create_topics(bootstrap)
                return f"in memory: its log was lost; {len(created)} topics created again"

            parts.append(Part("broker", lambda: exit_code_of(broker.process), broker.start,
                              broker.log_path, after_restart=recreate_topics))
        return parts

    def _service_part(self, service: ServiceProcess) -> Part:
        return Part(service.name, lambda: exit_code_of(service.process), service.start,
                    service.log_path)

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        pending = {service.name for service in self.services}
        while pending and not self.stopping and time.monotonic() < deadline:
            for service in self.services:
                if service.name in pending and service.ready():
                    pending.discard(service.name)
                    self.say(f"  {service.name:<8} ready on port {service.port}")
                elif service.process is not None and service.process.poll() is not None:
                    raise RuntimeError(
                        f"{service.name} exited while starting; see {service.log_path}"
                    )
            time.sleep(0.3)
        if pending and not self.stopping:
            raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")

    def _supervise(self) -> int:
        while not self.stopping:
            changed = False
            for part in self.parts:
                if self.stopping:
                    break
                changed |= self._tend(part)
            if changed:
                self._record_state()
            time.sleep(0.5)
        return 0

    def _tend(self, part: Part) -> bool:
        """Notice a death, or restart when its backoff has passed; True when its state changed."""
        now = time.monotonic()
        if part.retry_at is None:
            code = part.exit_code()
            if code is None:
                if now - part.up_since > STABLE_SECONDS:
                    part.failures = 0
                return False
            part.last_exit = code
            delay = min(2.0 ** part.failures, MAX_BACKOFF_SECONDS)
            part.retry_at = now + delay
            self.say(f"  {part.name} exited with code {code}; restarting in {delay:.0f}s "
                     f"(see {part.log_path})")
            return True
        if now < part.retry_at:
            return False
        part.failures += 1
        try:
            part.restart()
        except Exception as error:
            delay = min(2.0 ** part.failures, MAX_BACKOFF_SECONDS)
            part.retry_at = time.monotonic() + delay
            self.say(f"  {part.name} did not start ({error}); retrying in {delay:.0f}s")
            return True
        part.restarts += 1
        part.retry_at = None
        part.up_since = time.monotonic()
        note = part.after_restart() if part.after_restart else None
        self.say(f"  {part.name} restarted" + (f" ({note})" if note else ""))
        return True

    def _record_state(self) -> None:
        if self.system is not None:
            database_url, bootstrap, embedded_broker = self.system
            local_system.record(self.data_dir, database_url=database_url, bootstrap=bootstrap,
                                embedded_broker=embedded_broker,
                                parts=[part.describe() for part in self.parts],
                                object_export=self._object_export())

    def _object_export(self) -> dict[str, object]:
        """Exports to object storage go to the embedded SeaweedFS (its broker's bucket, under
        `exports/`) unless the settings name a store."""
        if self.settings.object_export_endpoint or self.seaweed is None:
            return {}
        return {"endpoint": self.seaweed.endpoint, "bucket": self.seaweed.bucket,
                "prefix": self.settings.object_export_prefix, "allow_http": True,
                "access_key_id": "feedbackloop", "secret_access_key": "feedbackloop"}

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.say("\nfeedbackloop: stopping")

    def shutdown(self) -> None:
        self.stopping = True
        local_system.forget(self.data_dir)
        by_name = {service.name: service for service in self.services}
        for group in DRAIN_ORDER:
            members = [by_name[name] for name in group if name in by_name]
            for service in members:
                service.terminate()
            for service in members:
                service.wait(30)
                self.say(f"  {service.name:<8} stopped")
        for label, part in (("broker", self.broker), ("seaweedfs", self.seaweed),
                            ("postgres", self.postgres)):
            if part is not None and part.running:
                part.stop()
                self.say(f"  {label:<8} stopped")
        self.services = []
        self.broker = self.seaweed = self.postgres = None


def run(settings: Settings) -> int:
    return Stack(settings).run()
