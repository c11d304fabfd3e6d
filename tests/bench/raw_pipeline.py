"""The raw pipeline's processes (see `tests/bench/cost.py`), each printing its own CPU seconds
(user + system) twice: once started (interpreter, imports and connections: the running system's
processes have paid that before the measurement) and as the last line when done.

    python -m tests.bench.raw_pipeline produce BOOTSTRAP RECORDS_FILE
    python -m tests.bench.raw_pipeline consume BOOTSTRAP TOPICS GROUP DATABASE_URL RECORDS ROWS

`produce` sends the records of the file (JSON lines of [topic, partition, key, value], key and
value in latin-1) with acks=all. `consume` reads TOPICS as group GROUP until it has seen RECORDS
records, decodes each value with orjson and COPYs, per fetched batch and in one transaction,
ROWS rows in all (spread evenly over the records) into public.raw_pipeline_rows, committing the
batch's offsets after the transaction.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def produce(bootstrap: str, records: list[list[Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=1_048_576)
    await producer.start()
    _cpu_so_far()
    try:
        futures = [
            await producer.send(topic, value.encode("latin-1"), key=key.encode("latin-1") or None,
                                partition=partition)
            for topic, partition, key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topics: str, group: str, database_url: str, records: int,
                  rows: int) -> None:
    consumer = AIOKafkaConsumer(*topics.split(","), bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    connection = await asyncpg.connect(database_url)
    await consumer.start()
    _cpu_so_far()
    seen = 0
    try:
        while seen < records:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            out: list[tuple[str, UUID, str, str, datetime | None, str]] = []
            for batch in batches.values():
                for record in batch:
                    document = orjson.loads(record.value or b"{}")
                    # Rows for this record: an even share of ROWS over RECORDS.
                    share = (seen + 1) * rows // records - seen * rows // records
                    seen += 1
                    row = (
                        document.get("tenant_id", ""), UUID(document["event_id"]),
                        document.get("type", ""), str(document.get("user_id") or ""),
                        datetime.fromisoformat(document["occurred_at"])
                        if document.get("occurred_at") else None,
                        record.value.decode() if record.value else "{}",
                    )
                    out += [row] * share
            if out:
                async with connection.transaction():
                    await connection.copy_records_to_table("raw_pipeline_rows", records=out)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
        await connection.close()


def _cpu_so_far() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(usage.ru_utime + usage.ru_stime, flush=True)


def main() -> int:
    command, *arguments = sys.argv[1:]
    if command == "produce":
        bootstrap, records_file = arguments
        with open(records_file) as lines:
            asyncio.run(produce(bootstrap, [json.loads(line) for line in lines]))
    elif command == "consume":
        bootstrap, topics, group, database_url, records, rows = arguments
        asyncio.run(consume(bootstrap, topics, group, database_url, int(records), int(rows)))
    else:
        raise SystemExit(f"unknown command {command!r}")
    _cpu_so_far()
    return 0


if __name__ == "__main__":
    sys.exit(main())
