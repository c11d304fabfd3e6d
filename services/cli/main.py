"""The `feedbackloop` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys

from feedbackloop.settings import Settings
from services.cli import admin
from services.cli.deadletters import add_dead_letter_parser, run_dead_letters
from services.cli.experiments import add_experiments_parser, run_experiments
from services.cli.export import add_export_parser, run_export, run_object_export
from services.cli.loadgen import add_loadgen_parser, run_loadgen
from services.cli.local_system import missing, status, with_local_system
from services.cli.topics import add_read_parser, run_read
from services.cli.webhooks import add_webhooks_parser, run_webhooks
from services.webhooks.admin import SecretBox


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedbackloop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the whole system on this machine")
    commands.add_parser("status", help="the parts of the system `feedbackloop run` started")
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("create-topics", help="create the Kafka topics")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", default="ingest,read", help="comma-separated scopes")
    keys.add_parser("list", help="list keys (never their values)")
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    add_loadgen_parser(commands)
    add_dead_letter_parser(commands)
    add_export_parser(commands)
    add_read_parser(commands)
    objects = commands.add_parser(
        "export-objects", help="export to object storage now: examples, feedback, responses")
    objects.add_argument("--tenant", action="append", default=None,
                         help="only this tenant (repeatable; default: every tenant)")
    add_webhooks_parser(commands)
    add_experiments_parser(commands)
    return parser


def _database_url(settings: Settings) -> str:
    url = settings.database_url.get_secret_value()
    if not url:
        raise SystemExit(missing("database", "FEEDBACKLOOP_DATABASE_URL", settings))
    return url


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    settings = Settings()
    if arguments.command == "run":
        from services.cli.stack import run

        return run(settings)
    if arguments.command == "status":
        report = status(settings)
        if report is None:
            raise SystemExit("no system started by `make run` is running")
        print(report)
        return 0
    settings = with_local_system(settings)
    if arguments.command == "export":
        return run_export(arguments, settings)
    if arguments.command == "read":
        return run_read(arguments, settings)
    if arguments.command == "export-objects":
        return run_object_export(arguments, settings)
    if arguments.command == "dead-letters":
        return run_dead_letters(arguments, settings)
    if arguments.command == "webhooks":
        return run_webhooks(arguments, _database_url(settings),
                            secret_box=lambda: SecretBox.from_settings(settings),
                            allow_private_networks=settings.webhooks_allow_private_networks)
    if arguments.command == "experiments":
        return run_experiments(arguments, _database_url(settings))
    if arguments.command == "loadgen":
        return run_loadgen(arguments)
    if arguments.command == "migrate":
        applied = asyncio.run(admin.migrate(_database_url(settings)))
        print("applied:", ", ".join(applied) or "nothing new")
        return 0
    if arguments.command == "create-topics":
        return _create_topics(settings)
    return _keys(arguments, settings)


def _create_topics(settings: Settings) -> int:
    if not settings.kafka_bootstrap_servers:
        raise SystemExit(missing("broker", "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS", settings))
    created = asyncio.run(
        admin.create_topics(
            settings.kafka_connection(),
            settings.topic_names(),
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
        )
    )
    print("created:", ", ".join(created) or "nothing new")
    return 0


def _keys(arguments: argparse.Namespace, settings: Settings) -> int:
    """`feedbackloop keys create|list|revoke`."""
    if arguments.keys_command == "create":
        try:
            scopes = admin.parse_scopes(arguments.scopes)
        except ValueError as error:
            raise SystemExit(str(error)) from None
        key_id, key = asyncio.run(
            admin.create_key(
                _database_url(settings), tenant_id=arguments.tenant, name=arguments.name,
                scopes=scopes,
            )
        )
        print(f"key_id: {key_id}\nkey:    {key}\n(the key is shown only now)")
        return 0
    if arguments.keys_command == "list":
        for row in asyncio.run(admin.list_keys(_database_url(settings))):
            state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "active"
            print(f"{row['key_id']}  {row['tenant_id']:<16} {row['name']:<20} "
                  f"{','.join(row['scopes']):<28} {state}")
        return 0
    if arguments.keys_command == "revoke":
        if not asyncio.run(admin.revoke_key(_database_url(settings), arguments.key_id)):
            raise SystemExit(f"no active key {arguments.key_id}")
        print("revoked")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
