"""`feedbackloop loadgen`: realistic mixed traffic at a chosen rate, through the Python client.

Each simulated interaction logs an AI response and, as users do, usually some feedback on it
(thumbs most often, then ratings, corrections, comments and agent replays); now and then a
person changes their mind on a thumb (flips it, or clicks it again to take it back); some are
recommendation sessions with browsing and a choice biased towards the top ranks. A tenth of
the users are in a prompt experiment: their exposure is logged and their responses carry the
variant.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from feedbackloop.client import AsyncFeedbackClient

ACTION_TYPES = ("todo", "appointment", "reply", "summary", "search")
MODELS = ("gpt-4o-mini", "support-v2", "llama-3.1-8b")
FACTORS = ("price", "quality", "speed", "locality")
Event = tuple[str, dict[str, Any]]


def conversation(rng: random.Random) -> list[Event]:
    """One AI response and what its user did with it."""
    response_id = f"resp-{uuid.uuid4().hex[:12]}"
    user_id = f"user-{rng.randrange(5_000)}"
    output = rng.choice(["Added it to your list.", "Booked for 3 PM.", "Here is a summary."])
    events: list[Event] = []
    tags: dict[str, Any] = {}
    if rng.random() < 0.1:
        tags = {"experiment": "loadgen-prompt", "variant": rng.choice(["control", "concise"])}
        events.append(("experiment.exposure", tags | {"user_id": user_id, "unit": "user"}))
    events.append((
        "response.logged",
        {"response_id": response_id, "user_id": user_id, "model": rng.choice(MODELS),
         "action_type": rng.choice(ACTION_TYPES), "output": output, "language": "en",
         "prompt": [{"role": "user", "content": f"request {rng.randrange(10_000)}"}],
         "prompt_version": rng.choice(["v1", "v2"])} | tags,
    ))
    roll = rng.random()
    feedback: dict[str, Any] = {"response_id": response_id, "user_id": user_id}
    if roll < 0.55:
        feedback["thumb"] = "up" if rng.random() < 0.8 else "down"
    elif roll < 0.75:
        feedback["rating"] = rng.choices([1, 2, 3, 4, 5], weights=[1, 1, 2, 4, 4])[0]
    elif roll < 0.83:
        feedback["correction"] = {"text": output.replace("3 PM", "4 PM") + " (edited)"}
    elif roll < 0.88:
        feedback["comment"] = {"text": "Not what I asked for", "reasons": ["wrong_action"]}
    elif roll < 0.93:
        feedback["replay"] = {"ai_reply": output, "agent_reply": "Done, and I emailed you.",
                              "useful": rng.random() < 0.5}
    else:
        return events  # most outputs get no feedback at all in real products; some here
    events.append(("feedback.submitted", feedback))
    if "thumb" in feedback and rng.random() < 0.08:
        events += changed_mind(rng, feedback)
    return events


def changed_mind(rng: random.Random, vote: dict[str, Any]) -> list[Event]:
    """The same person's second thought on a thumb: the other thumb, or the same one clicked
    again (a retraction). Timestamps are explicit: the second thought must be the later one
    even when both reach ingest in one batch."""
    first = datetime.now(UTC)
    vote["occurred_at"] = first.isoformat()
    later = (first + timedelta(seconds=rng.uniform(1, 30))).isoformat()
    person = {"response_id": vote["response_id"], "user_id": vote["user_id"], "occurred_at": later}
    if rng.random() < 0.6:
        flipped = "down" if vote["thumb"] == "up" else "up"
        return [("feedback.submitted", person | {"thumb": flipped})]
    return [("feedback.retracted", person | {"kind": "thumb"})]


def recommendation_session(rng: random.Random) -> list[Event]:
    session_id = f"sess-{uuid.uuid4().hex[:12]}"
    user_id = f"customer-{rng.randrange(2_000)}"
    count = rng.randint(3, 5)
    options = [
        {"item_id": f"item-{rng.randrange(500)}-{rank}", "rank": rank,
         "scores": {factor: round(rng.random(), 3) for factor in FACTORS},
         "propensity": round(1.0 / count, 3)}
        for rank in range(1, count + 1)
    ]
    common = {"session_id": session_id, "user_id": user_id}
    events: list[Event] = [("recommendation.session_started", common | {
        "algorithm_version": "match-2.1", "options": options,
        "stated_preferences": rng.sample(FACTORS, k=rng.randint(0, 2)),
        "complexity": rng.choice(["low", "medium", "high"]),
    })]
    for option in rng.sample(options, k=rng.randint(1, count)):
        events.append(("recommendation.interaction", common | {
            "item_id": option["item_id"], "interaction": rng.choice(["viewed", "expanded",
                                                                    "compared"]),
            "time_spent_seconds": round(rng.uniform(2, 120), 1)}))
    if rng.random() < 0.7:
        chosen = options[min(int(rng.expovariate(1.2)), count - 1)]
        choice = {"chosen_item_id": chosen["item_id"], "chosen_rank": chosen["rank"],
                  "satisfaction": rng.randint(2, 5)}
    else:
        choice = {}
    events.append(("recommendation.choice", common | choice | {
        "decision_time_seconds": round(rng.uniform(10, 900), 1)}))
    return events


def mixed_events(rng: random.Random) -> list[Event]:
    return recommendation_session(rng) if rng.random() < 0.2 else conversation(rng)


async def generate(url: str, key: str, *, rate: float, seconds: float, seed: int) -> Counter[str]:
    """Send about `rate` events a second for `seconds`; returns the events sent, by type."""
    rng = random.Random(seed)
    sent: Counter[str] = Counter()
    started = time.monotonic()
    async with AsyncFeedbackClient(url, key, batch_size=200, flush_interval=0.5) as client:
        while (elapsed := time.monotonic() - started) < seconds:
            ahead = sum(sent.values()) - elapsed * rate
            if ahead > 0:
                await asyncio.sleep(ahead / rate)
                continue
            for event_type, fields in mixed_events(rng):
                await client.send(event_type, **fields)
                sent[event_type] += 1
    return sent


def add_loadgen_parser(commands: Any) -> None:
    parser = commands.add_parser("loadgen", help="send realistic mixed traffic")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="an API key with the ingest scope")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)


def run_loadgen(arguments: argparse.Namespace) -> int:
    sent = asyncio.run(generate(arguments.url, arguments.key, rate=arguments.rate,
                                seconds=arguments.seconds, seed=arguments.seed))
    for event_type, count in sorted(sent.items()):
        print(f"{event_type:<34} {count}")
    print(f"{'total':<34} {sum(sent.values())}")
    return 0
