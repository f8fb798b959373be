"""Scenarios (simulated callers for a profile) and the results of running them."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from calls.models import AgentProfile, Call
from scenarios.spec import SpecError, parse_spec


def validate_spec(value: Any) -> None:
    try:
        parse_spec(value)
    except SpecError as exc:
        raise ValidationError(exc.errors) from exc


class Scenario(models.Model):
    profile = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="scenarios")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100)
    tags = models.CharField(
        max_length=200, blank=True, help_text="Comma-separated, e.g. offline, booking."
    )
    enabled = models.BooleanField(default=True)
    spec = models.JSONField(
        validators=[validate_spec],
        help_text="channel, voice, line_noise_dbfs, timeout_s, caller.script, assertions "
        "(docs/scenarios.md); the YAML file's other keys.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["profile__slug", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["profile", "slug"], name="one_scenario_slug_per_profile"
            )
        ]

    def __str__(self) -> str:
        return f"{self.profile.slug}/{self.slug}"

    @property
    def tag_list(self) -> list[str]:
        return [t.strip() for t in self.tags.split(",") if t.strip()]


class ResultStatus(models.TextChoices):
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    ERROR = "error", "Error"
    SKIPPED = "skipped", "Skipped"


class ScenarioResult(models.Model):
    """One run of one scenario: a call placed, its checks and what they found."""

    scenario = models.ForeignKey(
        Scenario, on_delete=models.SET_NULL, null=True, blank=True, related_name="results"
    )
    scenario_label = models.CharField(max_length=200, help_text="profile/slug when it ran.")
    batch = models.UUIDField(default=uuid.uuid4, db_index=True, help_text="One command or action.")
    repeat_index = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=ResultStatus.choices, db_index=True)
    checks = models.JSONField(
        default=list, blank=True, help_text="Per assertion: status, message, evidence."
    )
    error = models.TextField(blank=True)
    notes = models.JSONField(
        default=list, blank=True, help_text="What the caller noticed on the wire."
    )
    call = models.ForeignKey(
        Call, on_delete=models.SET_NULL, null=True, blank=True, related_name="scenario_results"
    )
    call_sid = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    duration_s = models.FloatField(null=True, blank=True, help_text="Whole run, call and checks.")
    call_duration_s = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.scenario_label} #{self.repeat_index}: {self.status}"
