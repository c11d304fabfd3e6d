"""`feedbackloop experiments create|list|show|start|stop|conclude|results`: a tenant's
experiments straight on the database (like `keys` and `webhooks`), through
services/experiments; `results` runs the same analysis as the query API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from feedbackloop.experiments.definition import METRICS, STATUSES, ExperimentSpec
from services.cli.database import run_on_connection
from services.experiments import admin, reads
from services.experiments.results import experiment_results


def add_experiments_parser(commands: Any) -> None:
    parser = commands.add_parser("experiments", help="A/B experiments: define, run, read")
    actions = parser.add_subparsers(dest="experiments_command", required=True)
    create = actions.add_parser(
        "create", help="define an experiment (a draft until started), from flags or --spec")
    create.add_argument("--tenant", required=True)
    create.add_argument("--spec", type=Path, help="a JSON file with the whole definition "
                        "(as POST /v1/experiments takes); flags below are then not used")
    create.add_argument("--name")
    create.add_argument("--variants", help="name=weight,... (the first is the control), "
                        "e.g. control=1,concise=1")
    create.add_argument("--unit", choices=("user", "session"), default="user")
    create.add_argument("--primary", choices=METRICS)
    create.add_argument("--guardrails", default="", help=f"comma-separated, of: "
                        f"{', '.join(METRICS)}")
    create.add_argument("--mde", type=float, help="minimum detectable effect, in the primary "
                        "metric's units (0.02 = two points of approval)")
    create.add_argument("--planned-units", type=int)
    create.add_argument("--description", default="")
    listing = actions.add_parser("list", help="the tenant's experiments")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--status", choices=STATUSES, action="append")
    for action, text in (("show", "one experiment's definition and history"),
                         ("start", "start (or resume) assigning units"),
                         ("stop", "pause: every unit gets the control"),
                         ("conclude", "end for good: every unit gets the winner (or control)"),
                         ("results", "estimates, intervals, SRM, guardrails and the verdict")):
        command = actions.add_parser(action, help=text)
        command.add_argument("--tenant", required=True)
        command.add_argument("name")
        if action in ("start", "stop", "conclude"):
            command.add_argument("--note")
        if action == "conclude":
            command.add_argument("--winner")
        if action == "results":
            command.add_argument("--grain", choices=("minute", "hour", "day"), default="hour")


def _spec(arguments: argparse.Namespace) -> ExperimentSpec:
    if arguments.spec is not None:
        document: Any = json.loads(arguments.spec.read_text())
    else:
        missing = [flag for flag, value in (("--name", arguments.name),
                                            ("--variants", arguments.variants),
                                            ("--primary", arguments.primary),
                                            ("--mde", arguments.mde),
                                            ("--planned-units", arguments.planned_units))
                   if value is None]
        if missing:
            raise SystemExit(f"create needs --spec or {', '.join(missing)}")
        variants = []
        for part in arguments.variants.split(","):
            name, _, weight = part.strip().partition("=")
            try:
                variants.append({"name": name, "weight": float(weight or 1)})
            except ValueError:
                raise SystemExit(f"--variants: {part!r} is not name=weight") from None
        document = {
            "name": arguments.name, "description": arguments.description,
            "unit": arguments.unit, "variants": variants, "primary_metric": arguments.primary,
            "guardrail_metrics": [g.strip() for g in arguments.guardrails.split(",") if g.strip()],
            "minimum_detectable_effect": arguments.mde, "planned_units": arguments.planned_units,
        }
    try:
        return ExperimentSpec.model_validate(document)
    except ValidationError as error:
        raise SystemExit(f"invalid experiment: {error}") from None


def run_experiments(arguments: argparse.Namespace, database_url: str) -> int:
    command, tenant = arguments.experiments_command, arguments.tenant
    try:
        if command == "create":
            spec = _spec(arguments)
            created = run_on_connection(
                database_url, lambda c: admin.create(c, tenant_id=tenant, spec=spec))
            print(f"created {created.name} ({created.experiment_id}), status {created.status}")
            return 0
        if command == "list":
            for e in run_on_connection(database_url, lambda c: reads.experiments(
                    c, tenant_id=tenant, statuses=arguments.status)):
                arms = ",".join(f"{v.name}={v.weight:g}" for v in e.spec.variants)
                print(f"{e.name:<30} {e.status:<10} {e.spec.unit:<8} "
                      f"{e.spec.primary_metric:<13} {arms}")
            return 0
        if command in ("start", "stop", "conclude"):
            changed = run_on_connection(database_url, lambda c: admin.transition(
                c, tenant_id=tenant, name=arguments.name, action=command, actor="cli",
                note=arguments.note, winner=getattr(arguments, "winner", None)))
            print(f"{changed.name}: {changed.status}")
            return 0
        found = run_on_connection(database_url, lambda c: reads.experiment(
            c, tenant_id=tenant, name=arguments.name))
        if found is None:
            raise SystemExit(f"no experiment {arguments.name!r} of tenant {tenant}")
        if command == "show":
            history = run_on_connection(database_url, lambda c: reads.transitions(
                c, tenant_id=tenant, name=arguments.name))
            json.dump({"name": found.name, "status": found.status,
                       "experiment_id": found.experiment_id,
                       "spec": found.spec.model_dump(mode="json"), "winner": found.winner,
                       "history": history}, sys.stdout, indent=2, default=str)
            print()
            return 0
        _, results = run_on_connection(
            database_url, lambda c: experiment_results(c, found, arguments.grain))
        print(results.model_dump_json(indent=2))
        return 0
    except (admin.ExperimentExists, admin.TransitionRefused) as error:
        raise SystemExit(str(error)) from None
    except admin.UnknownExperiment as error:
        raise SystemExit(str(error).strip("'\"")) from None
