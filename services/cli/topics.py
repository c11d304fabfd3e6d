"""`feedbackloop read TOPIC`: every message of a topic, oldest first, one per line, then exit
(what `kcat -C -e` does), for an engineer who wants to see, say, the training examples.

The topic is a logical name (`training-examples`, `feedback`, ...) or a physical one. Each
line is `partition<TAB>offset<TAB>key<TAB>value`; with `--values`, the value alone (JSON lines).
It reads through the project's own Kafka client, which speaks to the embedded broker and to
Kafka alike (Debian 12's kcat does not: see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from feedbackloop.contract import Topic
from services.cli.local_system import missing


def add_read_parser(subparsers: Any) -> None:
    read = subparsers.add_parser("read", help="print a topic's messages, then exit")
    read.add_argument("topic", help="training-examples, weights, feedback, ... or a full name")
    read.add_argument("--values", action="store_true", help="print only the values")
    read.add_argument("--max", type=int, default=None, dest="max_messages",
                      help="stop after this many messages")


def _physical(settings: Any, name: str) -> str:
    try:
        return str(settings.topic_names().physical(Topic(name)))
    except ValueError:
        return name


async def read_topic(
    connection: Any, topic: str, *, values_only: bool, max_messages: int | None
) -> int:
    """Prints the topic's messages up to its end when reading started; returns how many."""
    consumer = AIOKafkaConsumer(**connection.client_args(), enable_auto_commit=False)
    await consumer.start()
    printed = 0
    try:
        if topic not in await consumer.topics():
            raise SystemExit(f"no topic {topic!r}")
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
        while left and (max_messages is None or printed < max_messages):
            for tp, records in (await consumer.getmany(*left, timeout_ms=1000)).items():
                for record in records:
                    if max_messages is not None and printed >= max_messages:
                        break
                    value = (record.value or b"").decode(errors="replace")
                    key = (record.key or b"").decode(errors="replace")
                    print(value if values_only else
                          f"{record.partition}\t{record.offset}\t{key}\t{value}", flush=True)
                    printed += 1
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return printed


def run_read(arguments: argparse.Namespace, settings: Any) -> int:
    if not settings.kafka_bootstrap_servers:
        raise SystemExit(missing("broker", "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS", settings))
    printed = asyncio.run(read_topic(
        settings.kafka_connection(), _physical(settings, arguments.topic),
        values_only=arguments.values, max_messages=arguments.max_messages))
    sys.stderr.write(f"{printed} message(s)\n")
    return 0
