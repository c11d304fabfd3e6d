"""A command's one connection: opened for one action, closed after it, whatever it raised."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

T = TypeVar("T")


def run_on_connection(
    database_url: str, action: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """Runs `action` on a new connection to `database_url` in its own event loop."""

    async def run() -> T:
        connection = await asyncpg.connect(database_url)
        try:
            return await action(connection)
        finally:
            await connection.close()

    return asyncio.run(run())
