"""`feedbackloop dead-letters list|replay`: inspect dead letters, and replay them after a fix.

Replay re-publishes each dead letter's original key and value to its original topic, and
commits its place in the dead-letter topic (consumer group `<prefix>.dlq-replay.<topic>.<filter>`)
only after the broker acknowledged. It is bounded (`--max`), and running it again continues where
it stopped: nothing is replayed twice by the command, and a record replayed twice by a crash in
between is applied once, because consumers are idempotent on its event id.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from feedbackloop.contract import CONSUMED_TOPICS, Topic, TopicNames
from feedbackloop.kafka import KafkaConnection
from services.cli.local_system import missing


@dataclass(frozen=True)
class DeadLetterRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    def matches(self, service: str | None, error_class: str | None) -> bool:
        return (service is None or self.headers.get("fbl-service") == service) and (
            error_class is None or self.headers.get("fbl-error-class") == error_class
        )


def _record(raw: Any) -> DeadLetterRecord:
    headers = {name: value.decode(errors="replace") for name, value in raw.headers or ()}
    return DeadLetterRecord(raw.partition, raw.offset, raw.key, raw.value, headers)


async def list_dead_letters(
    connection: KafkaConnection, names: TopicNames, topic: Topic, *, limit: int
) -> list[DeadLetterRecord]:
    """The first `limit` dead letters of `topic`, read without joining any consumer group."""
    consumer = AIOKafkaConsumer(**connection.client_args(), enable_auto_commit=False)
    await consumer.start()
    try:
        name = names.dead_letter(topic)
        partitions = [TopicPartition(name, p) for p in sorted(
            consumer.partitions_for_topic(name) or await _partitions(consumer, name))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[DeadLetterRecord] = []
        while len(found) < limit and await _behind(consumer, ends):
            batch = await consumer.getmany(timeout_ms=1_000, max_records=limit)
            for records in batch.values():
                found.extend(_record(raw) for raw in records)
        return sorted(found, key=lambda r: (r.partition, r.offset))[:limit]
    finally:
        await consumer.stop()


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return True
    return False


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def replay_dead_letters(
    connection: KafkaConnection,
    names: TopicNames,
    topic: Topic,
    *,
    max_records: int,
    service: str | None = None,
    error_class: str | None = None,
) -> int:
    """Re-publish up to `max_records` matching dead letters; returns how many were replayed."""
    dead_letter_topic = names.dead_letter(topic)
    group = f"{names.prefix}.dlq-replay.{topic.value}.{service or 'all'}.{error_class or 'all'}"
    consumer = AIOKafkaConsumer(
        dead_letter_topic, **connection.client_args(), group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
        max_poll_records=min(max_records, 500),
    )
    producer = AIOKafkaProducer(**connection.client_args(), acks="all")
    await consumer.start()
    await producer.start()
    replayed = 0
    try:
        while replayed < max_records:
            batch = await consumer.getmany(timeout_ms=2_000, max_records=max_records - replayed)
            if not batch:
                break
            for partition, records in batch.items():
                done = None
                for raw in records:
                    if replayed >= max_records:
                        break
                    record = _record(raw)
                    if record.matches(service, error_class):
                        await producer.send_and_wait(
                            record.headers.get("fbl-original-topic", names.physical(topic)),
                            record.value,
                            key=record.key,
                            headers=[("fbl-replayed-from",
                                      f"{dead_letter_topic}:{raw.partition}:{raw.offset}".encode())],
                        )
                        replayed += 1
                    done = raw.offset
                if done is not None:
                    await consumer.commit({partition: done + 1})
    finally:
        await producer.stop()
        await consumer.stop()
    return replayed


def add_dead_letter_parser(commands: Any) -> None:
    parser = commands.add_parser("dead-letters", help="inspect and replay dead letters")
    actions = parser.add_subparsers(dest="dead_letters_command", required=True)
    topics = [topic.value for topic in CONSUMED_TOPICS]
    show = actions.add_parser("list", help="show dead letters with their reasons")
    show.add_argument("--topic", choices=topics, required=True)
    show.add_argument("--limit", type=int, default=50)
    replay = actions.add_parser("replay", help="re-publish dead letters to their topic")
    replay.add_argument("--topic", choices=topics, required=True)
    replay.add_argument("--max", type=int, default=100, dest="max_records")
    replay.add_argument("--service", help="only those dead-lettered by this consumer")
    replay.add_argument("--error-class", help="only those with this error class")


def run_dead_letters(arguments: argparse.Namespace, settings: Any) -> int:
    if not settings.kafka_bootstrap_servers:
        raise SystemExit(missing("broker", "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS", settings))
    connection, names = settings.kafka_connection(), settings.topic_names()
    topic = Topic(arguments.topic)
    if arguments.dead_letters_command == "list":
        records = asyncio.run(list_dead_letters(connection, names, topic, limit=arguments.limit))
        for record in records:
            h = record.headers
            print(f"{record.partition}:{record.offset}  {h.get('fbl-service', '?'):<9} "
                  f"{h.get('fbl-error-class', '?'):<28} from {h.get('fbl-original-topic')}"
                  f"[{h.get('fbl-original-partition')}]@{h.get('fbl-original-offset')} "
                  f"at {h.get('fbl-failed-at')}\n    {h.get('fbl-error-message', '')[:200]}")
        print(f"{len(records)} dead letter(s)")
        return 0
    count = asyncio.run(replay_dead_letters(
        connection, names, topic, max_records=arguments.max_records,
        service=arguments.service, error_class=arguments.error_class))
    print(f"replayed {count} dead letter(s)")
    return 0


__all__ = ["add_dead_letter_parser", "list_dead_letters", "replay_dead_letters", "run_dead_letters"]
