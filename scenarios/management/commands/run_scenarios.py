"""Run scenario tests: each a real call over its channel's wire protocol (Twilio, Telnyx or
the browser simulator), judged on the stored call.

    manage.py run_scenarios --profile demo --tag offline --repeat 3 --junit out.xml

Exits 1 when any run failed or errored, 2 when nothing matched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scenarios import report, selectors
from scenarios.batch import run_and_store
from scenarios.junit import junit_xml
from scenarios.runner import RunResult


class Command(BaseCommand):
    help = "Run scenario tests (simulated callers) against a server; non-zero exit on failure."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--profile", default="", help="Only this profile's scenarios (slug).")
        parser.add_argument(
            "--tag",
            action="append",
            default=[],
            help="Only scenarios with this tag (repeatable: all).",
        )
        parser.add_argument("--repeat", type=int, default=1, help="Run each scenario N times.")
        parser.add_argument("--parallel", type=int, default=1, help="Calls at the same time.")
        parser.add_argument(
            "--retry-busy",
            type=int,
            default=0,
            help="Place a call the server ended as busy (overloaded) again, up to N times.",
        )
        parser.add_argument("--junit", default="", help="Write JUnit XML to this file.")
        parser.add_argument(
            "--base-url",
            default="",
            help="A running server (same database; signed with TWILIO_AUTH_TOKEN over "
            "PUBLIC_BASE_URL; telnyx scenarios need SCENARIO_TELNYX_SEED/PORT, see "
            "docs/scenarios.md). Default: start one for the run.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["repeat"] < 1 or options["parallel"] < 1:
            raise CommandError("--repeat and --parallel must be at least 1")
        scenarios = selectors.scenarios_matching(profile=options["profile"], tags=options["tag"])
        if not scenarios:
            raise CommandError(
                "no enabled scenario matches (load the shipped ones with manage.py load_scenarios)",
                returncode=2,
            )
        total = len(scenarios) * options["repeat"]
        self.stdout.write(f"{total} run(s) of {len(scenarios)} scenario(s)")
        done: list[RunResult] = []

        def progress(result: RunResult) -> None:
            done.append(result)
            self.stdout.write(report.progress_line(len(done), total, result))
            self.stdout.flush()

        batch = run_and_store(
            scenarios=scenarios,
            base_url=options["base_url"],
            repeat=options["repeat"],
            parallel=options["parallel"],
            busy_retries=max(0, options["retry_busy"]),
            on_result=progress,
            on_server=lambda url: self.stdout.write(f"server started at {url}"),
        )
        self.stdout.write("\n" + report.summary_table(batch.results))
        if problems := report.problems(batch.results):
            self.stdout.write("\n" + problems)
        self.stdout.write(f"\nbatch {batch.id}")
        if options["junit"]:
            Path(options["junit"]).write_text(junit_xml(batch.results))
            self.stdout.write(f"JUnit XML: {options['junit']}")
        if any(r.status in ("failed", "error") for r in batch.results):
            raise CommandError("some scenarios failed", returncode=1)
