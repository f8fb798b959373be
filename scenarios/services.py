"""Every write of the scenarios app, and the YAML files in and out.

A YAML file holds one scenario per document (``---`` between documents); each document is
:mod:`scenarios.spec`'s format. Import upserts by (profile, slug), so a repository's files
can be loaded again after editing them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction

from calls.models import AgentProfile
from scenarios.models import Scenario, ScenarioResult
from scenarios.jobs import Job, RunResult
from scenarios.spec import SpecError, parse_document, parse_spec, split_document

SHIPPED = Path(__file__).resolve().parent / "shipped"
# The staff user the runner logs in as on the browser simulator (no password: it cannot
# log in anywhere else; deactivate it to refuse the runner browser calls).
RUNNER_USERNAME = "scenario-runner"


def yaml_documents(text: str, *, source: str = "YAML") -> list[dict[str, Any]]:
    """The documents of a YAML text (empty ones skipped); SpecError if it is not YAML."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([f"{source}: not valid YAML: {exc}"]) from exc
    if not documents:
        raise SpecError([f"{source}: no scenario in the file"])
    return documents


@transaction.atomic
def scenario_import(
    *, documents: list[dict[str, Any]], source: str = "YAML", only_new: bool = False
) -> list[Scenario]:
    """Create or update one scenario per document (``only_new``: leave existing ones as
    they are); all or nothing (SpecError lists every mistake of every document, each led by
    the document's number)."""
    errors: list[str] = []
    parsed = []
    for number, document in enumerate(documents, start=1):
        where = f"{source} document {number}" if len(documents) > 1 else source
        try:
            spec = parse_document(document)
        except SpecError as exc:
            errors += [f"{where}: {line}" for line in exc.errors]
            continue
        profile = AgentProfile.objects.filter(slug=spec.profile).first()
        if profile is None:
            errors.append(f"{where}: profile: no agent profile with slug {spec.profile!r}")
            continue
        parsed.append((profile, document, spec))
    if errors:
        raise SpecError(errors)
    saved = []
    for profile, document, spec in parsed:
        _, stored_spec = split_document(document)
        if only_new and Scenario.objects.filter(profile=profile, slug=spec.slug).exists():
            continue
        scenario, _ = Scenario.objects.update_or_create(
            profile=profile,
            slug=spec.slug,
            defaults={
                "name": spec.name,
                "tags": ", ".join(spec.tags),
                "enabled": spec.enabled,
                "spec": stored_spec,
            },
        )
        saved.append(scenario)
    return saved


def scenario_import_files(*, paths: Iterable[Path], only_new: bool = False) -> list[Scenario]:
    documents: list[dict[str, Any]] = []
    for path in paths:
        documents += yaml_documents(path.read_text(), source=path.name)
    return scenario_import(documents=documents, only_new=only_new) if documents else []


def scenarios_load_shipped(
    *, profiles: Iterable[str] | None = None, only_new: bool = False
) -> list[Scenario]:
    """The scenarios shipped for the demo profiles (``scenarios/shipped/<profile>/``),
    for the profiles of ``profiles`` (default: every profile that exists)."""
    wanted = set(profiles) if profiles is not None else None
    paths = []
    for folder in sorted(p for p in SHIPPED.iterdir() if p.is_dir()):
        exists = AgentProfile.objects.filter(slug=folder.name).exists()
        if exists and (wanted is None or folder.name in wanted):
            paths += sorted(folder.glob("*.yaml"))
    return scenario_import_files(paths=paths, only_new=only_new)


def scenario_document(*, scenario: Scenario) -> dict[str, Any]:
    """The YAML document of a stored scenario (what import reads back)."""
    return {
        "name": scenario.name,
        "slug": scenario.slug,
        "profile": scenario.profile.slug,
        "tags": scenario.tag_list,
        "enabled": scenario.enabled,
        **scenario.spec,
    }


def scenarios_export(*, scenarios: Iterable[Scenario]) -> str:
    return yaml.safe_dump_all(
        [scenario_document(scenario=s) for s in scenarios],
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )


def scenario_job(*, scenario: Scenario) -> Job:
    spec = parse_spec(
        scenario.spec,
        name=scenario.name,
        slug=scenario.slug,
        profile=scenario.profile.slug,
        tags=scenario.tag_list,
        enabled=scenario.enabled,
    )
    return Job(spec=spec, language=scenario.profile.language, scenario_id=scenario.pk)


def result_record(*, result: RunResult, batch: uuid.UUID) -> ScenarioResult:
    return ScenarioResult.objects.create(
        scenario_id=result.scenario_id,
        scenario_label=result.label[:200],
        batch=batch,
        repeat_index=result.repeat_index,
        status=result.status,
        checks=[c.as_dict() for c in result.checks],
        error=result.error,
        notes=result.notes,
        call_id=result.call_id,
        call_sid=result.call_sid,
        started_at=result.started_at,
        duration_s=round(result.duration_s, 3),
        call_duration_s=result.call_duration_s,
    )


def runner_session_open() -> tuple[str, str]:
    """A logged-in session of the ``scenario-runner`` staff user, in the database the
    server shares: (cookie name, session key), the cookie the simulator socket checks."""
    # Created whole in one write: a password set afterwards would change the session hash
    # under a parallel call's session.
    user, _ = get_user_model().objects.get_or_create(
        username=RUNNER_USERNAME,
        defaults={"is_staff": True, "is_active": True, "password": make_password(None)},
    )
    if not (user.is_active and user.is_staff):
        raise RuntimeError(
            f"the user {RUNNER_USERNAME!r} is not active staff: browser scenarios log in as it"
        )
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return settings.SESSION_COOKIE_NAME, store.session_key


def runner_session_close(*, session_key: str) -> None:
    """The call is over: its session is of no further use."""
    import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key).delete()
