"""`feedbackloop webhooks create|list|delete|deliveries|replay`: a tenant's webhook endpoints
and their deliveries, straight on the database (like `keys`), through services/webhooks; and
`reseal`, the operator's step of a key rotation, for every tenant."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any
from uuid import UUID

from services.cli.database import run_on_connection
from services.webhooks import admin, reads
from services.webhooks.admin import SecretBox
from services.webhooks.reads import WEBHOOK_EVENT_TYPES


def add_webhooks_parser(commands: Any) -> None:
    parser = commands.add_parser("webhooks", help="webhook endpoints and their deliveries")
    actions = parser.add_subparsers(dest="webhooks_command", required=True)
    create = actions.add_parser("create", help="create an endpoint (its secret is printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--url", required=True)
    create.add_argument("--events", required=True,
                        help=f"comma-separated, of: {', '.join(WEBHOOK_EVENT_TYPES)}")
    create.add_argument("--description", default="")
    create.add_argument("--secret", help="a whsec_ secret to use instead of a generated one")
    listing = actions.add_parser("list", help="the tenant's endpoints")
    listing.add_argument("--tenant", required=True)
    delete = actions.add_parser("delete", help="delete an endpoint (pending deliveries die)")
    delete.add_argument("--tenant", required=True)
    delete.add_argument("endpoint_id", type=UUID)
    deliveries = actions.add_parser("deliveries", help="the tenant's deliveries, newest first")
    deliveries.add_argument("--tenant", required=True)
    deliveries.add_argument("--endpoint", type=UUID)
    deliveries.add_argument("--state", choices=("pending", "delivered", "dead"))
    deliveries.add_argument("--limit", type=int, default=50)
    replay = actions.add_parser(
        "replay", help="send deliveries again (same webhook-id): those named, or all dead ones"
    )
    replay.add_argument("--tenant", required=True)
    replay.add_argument("delivery_ids", nargs="*", type=UUID)
    replay.add_argument("--endpoint", type=UUID)
    replay.add_argument("--state", choices=("dead", "delivered"), default="dead")
    replay.add_argument("--max", type=int, default=1_000)
    actions.add_parser(
        "reseal", help="seal every endpoint secret under FEEDBACKLOOP_WEBHOOKS_SECRET_KEY, once "
        "every replica has it (after a rotation, before dropping a previous key); exits 1 when "
        "some are still not sealed under it",
    )


def run_webhooks(
    arguments: argparse.Namespace, database_url: str, *,
    secret_box: Callable[[], SecretBox], allow_private_networks: bool = False,
) -> int:
    """Runs one command; `secret_box` gives the box sealing a created endpoint's secret (of
    FEEDBACKLOOP_WEBHOOKS_SECRET_KEY, the services' own key; ValueError when it cannot be
    made, for `create` and `reseal`); `allow_private_networks` is
    FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS (an endpoint on a literal non-public address or
    localhost is refused without it)."""
    command = arguments.webhooks_command
    if command == "reseal":
        return _reseal(database_url, secret_box)
    if command == "create":
        return _create(arguments, database_url, secret_box, allow_private_networks)
    if command == "list":
        return _list(arguments, database_url)
    if command == "delete":
        return _delete(arguments, database_url)
    if command == "deliveries":
        return _deliveries(arguments, database_url)
    return _replay(arguments, database_url)


def _create(
    arguments: argparse.Namespace, database_url: str, secret_box: Callable[[], SecretBox],
    allow_private_networks: bool,
) -> int:
    events = [e.strip() for e in arguments.events.split(",") if e.strip()]
    try:
        box = secret_box()
        view, secret = run_on_connection(database_url, lambda c: admin.create_endpoint(
            c, tenant_id=arguments.tenant, url=arguments.url, event_types=events, box=box,
            description=arguments.description, secret=arguments.secret,
            allow_private_networks=allow_private_networks,
        ))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(f"endpoint_id: {view.endpoint_id}\nsecret:      {secret}\n"
          f"events:      {', '.join(view.event_types)}\n(the secret is shown only now)")
    return 0


def _list(arguments: argparse.Namespace, database_url: str) -> int:
    found = run_on_connection(
        database_url, lambda c: reads.endpoints(c, tenant_id=arguments.tenant))
    for endpoint in found:
        print(f"{endpoint.endpoint_id}  {endpoint.url:<40} {','.join(endpoint.event_types)}"
              f"  {endpoint.description}")
    return 0


def _delete(arguments: argparse.Namespace, database_url: str) -> int:
    if not run_on_connection(database_url, lambda c: admin.delete_endpoint(
        c, tenant_id=arguments.tenant, endpoint_id=arguments.endpoint_id,
    )):
        raise SystemExit(f"no endpoint {arguments.endpoint_id} of tenant {arguments.tenant}")
    print("deleted")
    return 0


def _deliveries(arguments: argparse.Namespace, database_url: str) -> int:
    found = run_on_connection(database_url, lambda c: reads.deliveries(
        c, tenant_id=arguments.tenant, endpoint_id=arguments.endpoint, state=arguments.state,
        limit=arguments.limit,
    ))
    for d in found:
        answer = d.last_status if d.last_status is not None else (d.last_error or "-")
        print(f"{d.delivery_id}  {d.event_type:<26} {d.state:<9} attempts={d.attempts} "
              f"replays={d.replays} last={answer}  {d.created_at:%Y-%m-%d %H:%M:%S}")
    return 0


def _replay(arguments: argparse.Namespace, database_url: str) -> int:
    replayed = run_on_connection(database_url, lambda c: admin.replay_deliveries(
        c, tenant_id=arguments.tenant, delivery_ids=arguments.delivery_ids or None,
        endpoint_id=arguments.endpoint, state=arguments.state, limit=arguments.max,
    ))
    print(f"replaying {len(replayed)} deliveries")
    return 0 if replayed or not arguments.delivery_ids else 1


def _reseal(database_url: str, secret_box: Callable[[], SecretBox]) -> int:
    try:
        box = secret_box()
    except ValueError as error:
        raise SystemExit(str(error)) from None
    done = run_on_connection(database_url, lambda c: admin.reseal_secrets(c, box))
    print(f"sealed again under the current key: {done.resealed}")
    if done.stale:
        print(f"still not sealed under the current key: {done.stale} (written since by a "
              "replica on older settings: another replica may still be on them; give every "
              "replica the new settings and run this again)")
    if done.unreadable:
        print(f"endpoints whose secret no configured key opens: {done.unreadable} "
              "(their deliveries die; was a previous key dropped too early?)")
    return 1 if done.stale or done.unreadable else 0
