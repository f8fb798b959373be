"""Load scenarios from YAML files (create or update by profile and slug).

manage.py load_scenarios                     # the shipped ones, for the profiles that exist
manage.py load_scenarios path/a.yaml dir/    # files, or every *.yaml of a folder
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scenarios import services
from scenarios.spec import SpecError


class Command(BaseCommand):
    help = "Load scenario YAML files (default: the shipped demo scenarios)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="*", help="YAML files or folders.")
        parser.add_argument(
            "--only-new",
            action="store_true",
            help="Leave scenarios that exist (same profile and slug) as they are.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        paths: list[Path] = []
        for name in options["paths"]:
            path = Path(name)
            paths += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        try:
            if paths:
                loaded = services.scenario_import_files(paths=paths, only_new=options["only_new"])
            else:
                loaded = services.scenarios_load_shipped(only_new=options["only_new"])
        except SpecError as exc:
            raise CommandError("\n".join(exc.errors)) from exc
        for scenario in loaded:
            self.stdout.write(f"scenario {scenario}")
        self.stdout.write(f"{len(loaded)} scenario(s) loaded")
