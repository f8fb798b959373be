import uuid

import django.db.models.deletion
from django.db import migrations, models

import scenarios.models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("calls", "0005_call_audio_issues"),
    ]

    operations = [
        migrations.CreateModel(
            name="Scenario",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("slug", models.SlugField(max_length=100)),
                (
                    "tags",
                    models.CharField(
                        blank=True,
                        help_text="Comma-separated, e.g. offline, booking.",
                        max_length=200,
                    ),
                ),
                ("enabled", models.BooleanField(default=True)),
                (
                    "spec",
                    models.JSONField(
                        help_text=(
                            "channel, voice, line_noise_dbfs, timeout_s, caller.script, "
                            "assertions (docs/scenarios.md); the YAML file's other keys."
                        ),
                        validators=[scenarios.models.validate_spec],
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "profile",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="scenarios",
                        to="calls.agentprofile",
                    ),
                ),
            ],
            options={
                "ordering": ["profile__slug", "slug"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("profile", "slug"), name="one_scenario_slug_per_profile"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ScenarioResult",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "scenario_label",
                    models.CharField(help_text="profile/slug when it ran.", max_length=200),
                ),
                (
                    "batch",
                    models.UUIDField(
                        db_index=True, default=uuid.uuid4, help_text="One command or action."
                    ),
                ),
                ("repeat_index", models.PositiveIntegerField(default=0)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("passed", "Passed"),
                            ("failed", "Failed"),
                            ("error", "Error"),
                            ("skipped", "Skipped"),
                        ],
                        db_index=True,
                        max_length=10,
                    ),
                ),
                (
                    "checks",
                    models.JSONField(
                        blank=True,
                        default=list,
                        help_text="Per assertion: status, message, evidence.",
                    ),
                ),
                ("error", models.TextField(blank=True)),
                (
                    "notes",
                    models.JSONField(
                        blank=True, default=list, help_text="What the caller noticed on the wire."
                    ),
                ),
                ("call_sid", models.CharField(blank=True, max_length=64)),
                ("started_at", models.DateTimeField()),
                (
                    "duration_s",
                    models.FloatField(
                        blank=True, help_text="Whole run, call and checks.", null=True
                    ),
                ),
                ("call_duration_s", models.FloatField(blank=True, null=True)),
                (
                    "call",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="scenario_results",
                        to="calls.call",
                    ),
                ),
                (
                    "scenario",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="results",
                        to="scenarios.scenario",
                    ),
                ),
            ],
            options={"ordering": ["-started_at"]},
        ),
    ]
