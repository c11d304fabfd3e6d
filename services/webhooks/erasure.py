"""The webhooks schema's erasure SQL, run inside the consumer pipeline's transaction (private to
`repository.write_effects`).

An erasure removes everything of its user stored here when it is claimed: every delivery
(pending, delivered or dead) and every current signal of the user, whenever their events
occurred, since `occurred_at` is the client's word (a browser clock, a backdated or tz-less
erasure) and cannot decide what of an erased user may survive. The tombstone keeps the latest
`erased_at` (the erasure event's `occurred_at`): the user's events that arrive later and
occurred at or before it send nothing, later ones are kept as new.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from services.webhooks.processing import ExampleNotice, FeedbackNotice, UserErasure


async def erase_users(connection: asyncpg.Connection, erasures: Sequence[UserErasure]) -> None:
    """The users' tombstones (the latest `erased_at` of each), and every delivery (pending,
    delivered or dead) and current signal of their feedback, gone."""
    await connection.executemany(
        """
        INSERT INTO webhooks.erased_users (tenant_id, user_digest, erased_at)
        VALUES ($1, $2, $3)
        ON CONFLICT (tenant_id, user_digest) DO UPDATE
        SET erased_at = GREATEST(webhooks.erased_users.erased_at, EXCLUDED.erased_at)
        """,
        [(e.tenant_id, e.user_digest, e.erased_at) for e in erasures],
    )
    users = sorted({(e.tenant_id, e.user_digest) for e in erasures})
    for table in ("deliveries", "feedback_signals"):
        await connection.execute(
            f"""
            DELETE FROM webhooks.{table} t
            USING unnest($1::text[], $2::text[]) AS u(tenant_id, user_digest)
            WHERE t.tenant_id = u.tenant_id AND t.user_digest = u.user_digest
            """,
            [u[0] for u in users], [u[1] for u in users],
        )


async def not_erased(
    connection: asyncpg.Connection, notices: Sequence[FeedbackNotice]
) -> list[FeedbackNotice]:
    """The notices whose user was not erased after they occurred."""
    named = sorted({(n.tenant_id, n.user_digest) for n in notices if n.user_digest is not None})
    if not named:
        return list(notices)
    rows = await connection.fetch(
        """
        SELECT e.tenant_id, e.user_digest, e.erased_at FROM webhooks.erased_users e
        JOIN unnest($1::text[], $2::text[]) AS u(tenant_id, user_digest)
          ON e.tenant_id = u.tenant_id AND e.user_digest = u.user_digest
        """,
        [u[0] for u in named], [u[1] for u in named],
    )
    erased = {(row["tenant_id"], row["user_digest"]): row["erased_at"] for row in rows}
    return [
        n for n in notices
        if (n.tenant_id, n.user_digest) not in erased
        or n.order[0] > erased[(n.tenant_id, n.user_digest)]
    ]


async def remove_erased_examples(
    connection: asyncpg.Connection, notices: Sequence[ExampleNotice]
) -> set[tuple[str, UUID]]:
    """An example retracted for erasure: every delivery of it goes (its texts are of an erased
    user's conversation); the retraction's own delivery, written after, carries no text.
    Returns the (tenant, example) pairs retracted for erasure."""
    erased = sorted({(n.tenant_id, n.example_id) for n in notices
                     if n.revision is None and n.data.get("reason") == "erasure"})
    if erased:
        await connection.execute(
            """
            DELETE FROM webhooks.deliveries d
            USING unnest($1::text[], $2::uuid[]) AS x(tenant_id, example_id)
            WHERE d.tenant_id = x.tenant_id AND d.example_id = x.example_id
            """,
            [x[0] for x in erased], [x[1] for x in erased],
        )
    return set(erased)
