"""Administrative commands: migrations, topics and API keys."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from feedbackloop.contract import TopicNames
from feedbackloop.http.auth import ALL_SCOPES
from feedbackloop.identity import generate_api_key, hash_api_key
from feedbackloop.kafka import KafkaConnection, ensure_topics
from feedbackloop.migrations import apply_migrations


async def migrate(database_url: str) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        return [f"{m.version:04d}_{m.name}" for m in await apply_migrations(connection)]
    finally:
        await connection.close()


async def create_topics(
    connection: KafkaConnection, names: TopicNames, *, partitions: int, replication_factor: int
) -> list[str]:
    return await ensure_topics(
        connection,
        names.all_physical(),
        partitions=partitions,
        replication_factor=replication_factor,
    )


def parse_scopes(text: str) -> list[str]:
    scopes = [scope.strip() for scope in text.split(",") if scope.strip()]
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise ValueError(
            f"unknown scopes {unknown}; choose from {', '.join(ALL_SCOPES)}"
            if unknown
            else "at least one scope is needed"
        )
    return scopes


async def create_key(
    database_url: str, *, tenant_id: str, name: str, scopes: Sequence[str], key: str | None = None
) -> tuple[str, str]:
    """Store a key's hash; returns (key_id, key). The key itself is shown once, never stored.

    Registering an existing key (same value) again is a no-op that returns its id.
    """
    key = key or generate_api_key()
    connection = await asyncpg.connect(database_url)
    try:
        key_id = await connection.fetchval(
            """
            INSERT INTO auth.api_keys (key_hash, tenant_id, name, scopes)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (key_hash) DO UPDATE SET key_hash = EXCLUDED.key_hash
            RETURNING key_id
            """,
            hash_api_key(key),
            tenant_id,
            name,
            list(scopes),
        )
        return str(key_id), key
    finally:
        await connection.close()


async def list_keys(database_url: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetch(
            "SELECT key_id, tenant_id, name, scopes, created_at, revoked_at "
            "FROM auth.api_keys ORDER BY created_at"
        )
    finally:
        await connection.close()


async def revoke_key(database_url: str, key_id: str) -> bool:
    connection = await asyncpg.connect(database_url)
    try:
        status = await connection.execute(
            "UPDATE auth.api_keys SET revoked_at = now() "
            "WHERE key_id = $1::uuid AND revoked_at IS NULL",
            key_id,
        )
        return status.endswith(" 1")
    finally:
        await connection.close()
