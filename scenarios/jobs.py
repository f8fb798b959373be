"""What a batch is made of: where calls go (:class:`Target`), what to run (:class:`Job`)
and what came of each run (:class:`RunResult`). Plain data, shared by the runner, the
dialling of each channel and the services that store results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from scenarios.assertions import FAILED, CheckResult
from scenarios.spec import ScenarioSpec
from scenarios.telnyx_api import TelnyxRig
from scenarios.wire_client import VOICE_PATH


@dataclass(slots=True, kw_only=True)
class Target:
    """Where calls go. ``public_base_url`` is the URL Twilio would sign (the server's
    ``PUBLIC_BASE_URL``); it differs from ``base_url`` behind a tunnel or proxy. ``telnyx``
    is the runner's own Telnyx, which the server must be configured to trust (None: telnyx
    scenarios are skipped with the reason)."""

    base_url: str
    auth_token: str
    public_base_url: str = ""
    telnyx: TelnyxRig | None = None

    def voice_urls(self, profile: str) -> tuple[str, str]:
        path = f"{VOICE_PATH}?profile={profile}"
        return self.base_url.rstrip("/") + path, (self.public_base_url or self.base_url).rstrip(
            "/"
        ) + path


@dataclass(slots=True, kw_only=True)
class Job:
    spec: ScenarioSpec
    language: str  # the profile's, for the caller's voice
    scenario_id: int | None = None

    @property
    def label(self) -> str:
        return f"{self.spec.profile}/{self.spec.slug}"


@dataclass(slots=True, kw_only=True)
class RunResult:
    label: str
    scenario_id: int | None
    repeat_index: int
    status: str  # passed | failed | error | skipped
    started_at: datetime
    checks: list[CheckResult] = field(default_factory=list)
    error: str = ""
    notes: list[str] = field(default_factory=list)
    call_id: str | None = None
    call_sid: str = ""
    duration_s: float = 0.0
    call_duration_s: float | None = None
    busy: bool = False  # the server ended the call as overloaded: not the agent's behaviour

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAILED]
