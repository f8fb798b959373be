"""Agent profiles, their per-channel overlays, calls and transcript turns."""

from __future__ import annotations

import re
import uuid

from django.core.exceptions import ValidationError
from django.core.files.storage import Storage, storages
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from orchestrator.config import DEFAULT_APOLOGY
from orchestrator.contracts import END_REASON_LABELS
from orchestrator.contracts import EndReason as SessionEndReason

ENGINE_CHOICES = [
    ("auto", "Auto (cloud when its key is set, else local)"),
    ("groq", "Groq"),
    ("openai", "OpenAI-compatible"),
    ("azure", "Azure Speech"),
    ("local", "Local offline (demo quality)"),
]
ENGINE_NAMES = {name for name, _ in ENGINE_CHOICES}

bcp47 = RegexValidator(
    r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$", "Use a BCP-47 language tag such as es-ES or en-US."
)


def validate_engine_list(value: str) -> None:
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in ENGINE_NAMES - {"auto"}]
    if unknown:
        raise ValidationError(
            "Unknown engine(s) %(unknown)s; use a comma-separated list of: %(known)s.",
            params={
                "unknown": ", ".join(unknown),
                "known": ", ".join(sorted(ENGINE_NAMES - {"auto"})),
            },
        )


def validate_json_schema(value: object) -> None:
    if value in (None, {}, ""):
        return
    import jsonschema

    if not isinstance(value, dict):
        raise ValidationError("The extraction schema must be a JSON object (a JSON Schema).")
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        raise ValidationError(f"Invalid JSON Schema: {exc.message}") from exc


BUILTIN_TOOL_NAMES = ("end_call", "transfer_call")
_SIP_OR_E164 = re.compile(r"^(\+[1-9]\d{6,14}|sips?:[^\s@]+@[^\s]+)$")


def transfer_target_list(value: str) -> tuple[tuple[str, str], ...]:
    """``"Front desk = +34910000000"`` lines -> ``(("Front desk", "+34910000000"),)``.

    A line without a label uses the destination as its label. Raises ``ValidationError``
    for a destination that is neither E.164 nor a SIP URI."""
    targets: list[tuple[str, str]] = []
    errors: list[str] = []
    for line in value.splitlines():
        if not line.strip():
            continue
        # The label ends at the first "=": a SIP URI may hold more (";transport=tls").
        label, sep, destination = line.partition("=")
        if not sep or not _SIP_OR_E164.match(destination.strip()):
            label, destination = "", line  # no label, or the "=" was the URI's own
        destination = destination.strip()
        label = label.strip() or destination
        if not _SIP_OR_E164.match(destination):
            errors.append(
                f"“{destination}” is not an E.164 number (+34910000000) or a SIP URI "
                "(sip:desk@example.com)."
            )
            continue
        targets.append((label, destination))
    if errors:
        raise ValidationError(errors)
    return tuple(targets)


def validate_transfer_targets(value: str) -> None:
    transfer_target_list(value)


class Channel(models.TextChoices):
    BROWSER = "browser", "Browser simulator"
    TWILIO = "twilio", "Twilio"
    TELNYX = "telnyx", "Telnyx"


class VoicemailAction(models.TextChoices):
    OFF = "off", "Off (no detection)"
    HANG_UP = "hang_up", "Detect, hang up on a machine"
    LEAVE_MESSAGE = "leave_message", "Detect, leave the voicemail message"


class TurnDetection(models.TextChoices):
    SMART = "smart", "Smart (model + words)"
    SILENCE = "silence", "Silence timer"


class AgentProfile(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=80, unique=True)
    is_active = models.BooleanField("active", default=True)
    is_default = models.BooleanField(
        "default", default=False, help_text="Used when a call names no profile. Exactly one."
    )
    language = models.CharField(max_length=20, default="es-ES", validators=[bcp47])
    system_prompt = models.TextField(default="You are a helpful voice assistant. Answer briefly.")
    greeting = models.CharField(max_length=500, blank=True, help_text="Said when the call starts.")

    stt_engine = models.CharField(
        "STT engine", max_length=20, choices=ENGINE_CHOICES, default="auto"
    )
    stt_model = models.CharField("STT model", max_length=120, blank=True)
    stt_fallback = models.CharField(
        "STT fallback",
        max_length=120,
        blank=True,
        validators=[validate_engine_list],
        help_text="Comma-separated engines tried in order when the first fails, e.g. openai,local.",
    )
    llm_engine = models.CharField(
        "LLM engine", max_length=20, choices=ENGINE_CHOICES, default="auto"
    )
    llm_model = models.CharField("LLM model", max_length=120, blank=True)
    llm_fallback = models.CharField(
        "LLM fallback", max_length=120, blank=True, validators=[validate_engine_list]
    )
    tts_engine = models.CharField(
        "TTS engine", max_length=20, choices=ENGINE_CHOICES, default="auto"
    )
    tts_model = models.CharField("TTS model", max_length=120, blank=True)
    tts_fallback = models.CharField(
        "TTS fallback", max_length=120, blank=True, validators=[validate_engine_list]
    )
    voice_name = models.CharField(max_length=120, blank=True, help_text="e.g. es-ES-ElviraNeural")

    temperature = models.FloatField(
        default=0.6, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_tokens = models.PositiveIntegerField(
        default=200, validators=[MinValueValidator(16), MaxValueValidator(4096)]
    )
    voice_pacing_ms = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(2000)], help_text="Pause between spoken sentences."
    )

    # Turn-taking: when the caller is done (end of turn), and what their speech over the
    # agent means (overlaps). orchestrator/config.py describes how the session uses each.
    turn_detection = models.CharField(
        max_length=10,
        choices=TurnDetection.choices,
        default=TurnDetection.SMART,
        help_text="How the agent decides the caller has finished speaking. Smart: after a "
        "short pause a turn model and the last words decide (fast answers, no cut-off "
        "sentences). Silence timer: a fixed pause always ends the turn (simple, predictable "
        "menus).",
    )
    vad_stop_ms = models.PositiveIntegerField(
        "pause before checking (ms)",
        default=250,
        validators=[MinValueValidator(100), MaxValueValidator(1500)],
        help_text="Pause that makes the agent check whether the caller is done (smart mode).",
    )
    max_turn_silence_ms = models.PositiveIntegerField(
        "longest wait for an unfinished turn (ms)",
        default=2500,
        validators=[MinValueValidator(500), MaxValueValidator(10000)],
        help_text="Smart mode: when the caller seems not finished (“a table for…”), the agent "
        "waits for more this long at most, then answers anyway.",
    )
    turn_threshold = models.FloatField(
        "turn model threshold",
        default=0.5,
        validators=[MinValueValidator(0.1), MaxValueValidator(0.95)],
        help_text="Smart mode: the turn model's confidence (0–1) at which a turn counts as "
        "complete. Higher waits longer for slow talkers; lower answers sooner.",
    )
    silence_timeout_ms = models.PositiveIntegerField(
        "silence timer (ms)",
        default=700,
        validators=[MinValueValidator(200), MaxValueValidator(5000)],
        help_text="Silence timer mode: this much silence ends the caller's turn.",
    )
    stt_partial_interval_ms = models.PositiveIntegerField(
        "transcribe while speaking, every (ms)",
        default=1000,
        validators=[MaxValueValidator(5000)],
        help_text="Transcribe the caller while they speak, every this much new speech, to "
        "show their words as they come (simulator page). Local STT engine only. "
        "0 = off (saves CPU).",
    )
    noise_suppression = models.BooleanField(
        default=True,
        help_text="Clean the caller's audio (noise suppression and high-pass) so steady "
        "line noise or a TV does not start turns or interrupt the agent. Keep it on for "
        "phone lines.",
    )
    barge_in_enabled = models.BooleanField(
        "barge-in",
        default=True,
        help_text="Let the caller interrupt the agent by speaking over it.",
    )
    barge_in_min_ms = models.PositiveIntegerField(
        "speech that always interrupts (ms)",
        default=900,
        validators=[MinValueValidator(60), MaxValueValidator(3000)],
        help_text="Caller speech over the agent that interrupts it whatever the words (shorter "
        "speech interrupts only if it says more than a backchannel).",
    )
    backchannel_words = models.CharField(
        "extra backchannel words",
        max_length=500,
        blank=True,
        help_text="Comma-separated extra words or phrases that only acknowledge the agent "
        "(e.g. “claro, entendido, got it”); said over the agent, they let it carry on. "
        "Added to the built-in list of the profile's language (mm-hmm, yeah, okay, sí, vale…).",
    )
    idle_timeout_s = models.PositiveIntegerField(
        default=15, validators=[MinValueValidator(3), MaxValueValidator(600)]
    )
    idle_reprompt = models.CharField(max_length=300, default="¿Sigue ahí?")
    max_call_seconds = models.PositiveIntegerField(
        default=600, validators=[MinValueValidator(10), MaxValueValidator(4 * 3600)]
    )
    goodbye_message = models.CharField(max_length=300, default="Gracias por llamar. Hasta luego.")
    apology_message = models.CharField(max_length=300, default=DEFAULT_APOLOGY)
    busy_message = models.CharField(
        max_length=300,
        blank=True,
        help_text=(
            "Said when every line is busy, then hang up: to a Twilio caller refused by "
            "admission control (empty: a busy tone, <Reject reason=\"busy\"/>; Telnyx callers "
            "always get a busy signal), and in a call the local models can no longer serve "
            "(empty: a stock line in the profile's language)."
        ),
    )

    extraction_schema = models.JSONField(
        blank=True,
        null=True,
        validators=[validate_json_schema],
        help_text="Optional JSON Schema of extra fields extracted after each call.",
    )
    phone_numbers = models.CharField(
        max_length=500,
        blank=True,
        help_text="Comma-separated E.164 numbers routed to this profile (inbound calls).",
    )
    webhook_url = models.URLField(
        blank=True, help_text="POSTed the call, transcript and extraction."
    )
    webhook_secret = models.CharField(
        max_length=200, blank=True, help_text="HMAC-SHA256 key for the X-Voiceapp-Signature header."
    )

    # Tools (docs/tools.md): what the agent can do besides talking. HTTP tools are the
    # ProfileTool rows below the profile.
    end_call_enabled = models.BooleanField(
        "agent may hang up",
        default=True,
        help_text="The agent ends the call after its goodbye (tool end_call; with the local "
        "offline model, which cannot call tools, a goodbye in its own words ends the call).",
    )
    transfer_destinations = models.TextField(
        blank=True,
        validators=[validate_transfer_targets],
        help_text="One per line, “Label = destination”, destination an E.164 number or a SIP "
        "URI (e.g. “Front desk = +34910000000”). The agent may transfer the caller only to "
        "these. Empty: no transfer.",
    )
    transfer_message = models.CharField(
        max_length=300,
        default="Le paso con una persona. Un momento, por favor.",
        help_text="Said before a transfer.",
    )
    tool_filler = models.CharField(
        "tool filler",
        max_length=200,
        default="Un momento, lo compruebo.|Sigo comprobándolo, gracias por esperar.",
        help_text="Said when a tool takes longer than a second, so the caller never hears "
        "dead air. Several lines separated by | are said in turn while the tool runs.",
    )
    voicemail_action = models.CharField(
        "answering machine",
        max_length=20,
        choices=VoicemailAction.choices,
        default=VoicemailAction.OFF,
        help_text="Outbound calls: detect an answering machine (carrier AMD) and hang up or "
        "leave the voicemail message after the beep. Off: no detection (the agent greets "
        "whoever answers at once).",
    )
    voicemail_message = models.TextField(
        blank=True, help_text="Left after the beep when the answering machine option says so."
    )

    # Conversation flow (docs/flows.md): the steps the agent walks through; checked on save.
    flow = models.JSONField(
        blank=True,
        null=True,
        help_text="Optional conversation flow (JSON or YAML, docs/flows.md): nodes with their "
        "task, tools and transitions. Empty: the system prompt alone drives the call. Needs an LLM "
        "that calls tools (Groq or OpenAI-compatible); the local model follows it by a JSON "
        "grammar, demo quality.",
    )

    # Call recording (docs/recordings.md).
    record_calls = models.BooleanField(
        default=False,
        help_text="Keep a two-channel recording of each call (caller left, agent right), "
        "listened to in the call's admin page; deleted after RECORDING_RETENTION_DAYS.",
    )
    recording_consent_line = models.TextField(
        blank=True,
        help_text="Said before the greeting when calls are recorded, in the profile's "
        "language, e.g. “This call is recorded for quality purposes.” End it with a full stop.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_profile"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def phone_number_list(self) -> list[str]:
        return [n.strip() for n in self.phone_numbers.split(",") if n.strip()]

    def clean(self) -> None:
        check_turn_timing(
            {"vad_stop_ms": self.vad_stop_ms, "max_turn_silence_ms": self.max_turn_silence_ms}
        )
        if self.flow:
            self._check_flow()

    def _check_flow(self) -> None:
        """Every problem of the flow, each its own message under the field."""
        from orchestrator.flows import FlowError, parse_flow

        try:
            labels = [label for label, _ in transfer_target_list(self.transfer_destinations)]
        except ValidationError:
            labels = None  # (the destinations' own error is shown on their field)
        tools = list(self.tools.values_list("name", flat=True)) if self.pk else []
        # Only the built-ins this profile turns on (orchestrator/tools/builtin.py): a node
        # listing end_call with hang-up off would otherwise save and silently lack it.
        builtins = ["demo_booking"]
        if self.end_call_enabled:
            builtins.append("end_call")
        if labels is None or labels:  # (invalid destinations: their own error suffices)
            builtins.append("transfer_call")
        try:
            parse_flow(self.flow, known_tools=tools, transfer_labels=labels, builtins=builtins)
        except FlowError as exc:
            raise ValidationError({"flow": exc.problems}) from None


def backchannel_word_list(value: str) -> tuple[str, ...]:
    """``"Claro, got it,"`` -> ``("claro", "got it")``: what the call engine matches."""
    return tuple(word.strip().lower() for word in value.split(",") if word.strip())


def check_turn_timing(values: dict[str, object], field: str = "max_turn_silence_ms") -> None:
    """Smart mode's longest wait must be longer than the pause that starts it."""
    pause, longest = values.get("vad_stop_ms"), values.get("max_turn_silence_ms")
    if isinstance(pause, int) and isinstance(longest, int) and longest <= pause:
        raise ValidationError(
            {
                field: f"The longest wait for an unfinished turn ({longest} ms) must be "
                f"longer than the pause before checking ({pause} ms)."
            }
        )


# Profile fields a channel overlay may override.
OVERLAY_FIELDS: tuple[str, ...] = (
    "language", "system_prompt", "greeting",
    "stt_engine", "stt_model", "stt_fallback",
    "llm_engine", "llm_model", "llm_fallback",
    "tts_engine", "tts_model", "tts_fallback", "voice_name",
    "temperature", "max_tokens", "voice_pacing_ms",
    "turn_detection", "vad_stop_ms", "max_turn_silence_ms", "turn_threshold",
    "silence_timeout_ms", "stt_partial_interval_ms", "noise_suppression",
    "barge_in_enabled", "barge_in_min_ms", "backchannel_words",
    "idle_timeout_s", "idle_reprompt",
    "max_call_seconds", "goodbye_message", "apology_message",
)  # fmt: skip


def validate_overrides(overrides: object, profile: AgentProfile | None = None) -> dict[str, object]:
    """Check an overlay's overrides; return them cleaned (converted to each field's type)."""
    if not isinstance(overrides, dict):
        raise ValidationError({"overrides": "Overrides must be a JSON object of field: value."})
    unknown = sorted(set(overrides) - set(OVERLAY_FIELDS))
    if unknown:
        raise ValidationError(
            {
                "overrides": f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(OVERLAY_FIELDS)}."
            }
        )
    cleaned: dict[str, object] = {}
    errors: list[str] = []
    for key, value in overrides.items():
        field = AgentProfile._meta.get_field(key)
        if key == "backchannel_words" and isinstance(value, list):
            # JSON's natural spelling of a word list; stored as the form field's text.
            if not all(isinstance(item, str) for item in value):
                errors.append(f"{key}: a list of words must hold only strings.")
                continue
            value = ", ".join(value)
        try:
            cleaned[key] = field.clean(value, profile)
        except ValidationError as exc:
            errors.append(f"{key}: {' '.join(exc.messages)}")
    if errors:
        raise ValidationError({"overrides": errors})
    return cleaned


class ChannelOverlay(models.Model):
    """Per-channel overrides of a profile (e.g. a slower pace or another voice on phone lines)."""

    profile = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="overlays")
    channel = models.CharField(max_length=20, choices=Channel.choices)
    overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text='JSON object, e.g. {"voice_name": "es-ES-AlvaroNeural", "silence_timeout_ms": 900}',
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["profile", "channel"], name="one_overlay_per_channel")
        ]

    def __str__(self) -> str:
        return f"{self.profile} / {self.get_channel_display()}"

    def clean(self) -> None:
        profile = getattr(self, "profile", None)
        self.overrides = validate_overrides(self.overrides, profile)
        if profile is not None and {"vad_stop_ms", "max_turn_silence_ms"} & set(self.overrides):
            timing = ("vad_stop_ms", "max_turn_silence_ms")
            values = {name: getattr(profile, name) for name in timing}
            check_turn_timing({**values, **self.overrides}, field="overrides")


class CallStatus(models.TextChoices):
    RINGING = "ringing", "Ringing"
    ACTIVE = "active", "Active"
    ENDED = "ended", "Ended"
    FAILED = "failed", "Failed"


# One list of end reasons: the call engine's, with the labels the admin shows.
EndReason = models.TextChoices(
    "EndReason", [(r.name, (r.value, END_REASON_LABELS[r])) for r in SessionEndReason]
)


class ExtractionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


def recordings_storage() -> Storage:
    """Where call recordings are kept: ``STORAGES["recordings"]`` (the local media
    directory unless configured otherwise, docs/recordings.md)."""
    return storages["recordings"]


class Call(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    profile = models.ForeignKey(
        AgentProfile, on_delete=models.SET_NULL, null=True, blank=True, related_name="calls"
    )
    channel = models.CharField(max_length=20, choices=Channel.choices)
    direction = models.CharField(
        max_length=10, choices=[("inbound", "Inbound"), ("outbound", "Outbound")], default="inbound"
    )
    external_id = models.CharField(
        max_length=128, blank=True, db_index=True, help_text="CallSid / call_control_id."
    )
    stream_id = models.CharField(max_length=128, blank=True, help_text="streamSid / stream_id.")
    from_number = models.CharField(max_length=40, blank=True)
    to_number = models.CharField(max_length=40, blank=True)
    status = models.CharField(
        max_length=10, choices=CallStatus.choices, default=CallStatus.ACTIVE, db_index=True
    )
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, choices=EndReason.choices, blank=True)
    error_detail = models.TextField(blank=True)
    dtmf_digits = models.CharField(max_length=200, blank=True)
    config_snapshot = models.JSONField(default=dict, blank=True, help_text="Effective config used.")
    metrics = models.JSONField(default=dict, blank=True)
    extraction_status = models.CharField(
        max_length=10, choices=ExtractionStatus.choices, default=ExtractionStatus.PENDING
    )
    extraction = models.JSONField(null=True, blank=True)
    extraction_error = models.TextField(blank=True)
    webhook_status = models.CharField(max_length=40, blank=True)
    transferred_to = models.CharField(
        max_length=200, blank=True, help_text="Where the agent transferred the call."
    )
    answered_by = models.CharField(
        max_length=40,
        blank=True,
        help_text="Outbound answering-machine detection verdict (human, machine, unknown…).",
    )
    # Late agent frames + gaps in the caller's audio (metrics["audio_health"]; 0: clean);
    # null for calls that ended without a session summary. Indexed: the admin's "audio
    # stuttered" filter and operators look for calls with audio_issues > 0.
    audio_issues = models.PositiveIntegerField(
        null=True,
        blank=True,
        db_index=True,
        help_text="Late agent frames plus gaps in the caller's audio (0: clean audio).",
    )
    # Two-channel Opus/Ogg, caller left and agent right; time 0 is ``started_at``. Stored
    # by services.call_recording_store when the call ends, served to staff only
    # (calls:recording, calls:recording_peaks).
    recording = models.FileField(
        storage=recordings_storage, upload_to="recordings/", max_length=200, blank=True
    )
    recording_duration_s = models.FloatField(null=True, blank=True)
    recording_bytes = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["status", "last_heartbeat_at"])]
        # Re-running the analysis re-sends the profile's webhook and rewrites the call's
        # extraction: more than viewing, yet no edit of the call (which has no change form).
        permissions = [("rerun_extraction", "Can re-run a call's post-call extraction")]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} call {self.external_id or self.id}"

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class Turn(models.Model):
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="turns")
    sequence = models.PositiveIntegerField()
    role = models.CharField(
        max_length=10, choices=[("user", "User"), ("assistant", "Assistant"), ("tool", "Tool")]
    )
    text = models.TextField()
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    interrupted = models.BooleanField(default=False)
    # A user turn the agent never answered (engine failure, stall, hang-up while thinking).
    unanswered = models.BooleanField(default=False)
    unanswered_reason = models.CharField(max_length=300, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # Tool turns (role "tool"): the call the LLM made and what came back.
    tool_name = models.CharField(max_length=64, blank=True)
    tool_arguments = models.JSONField(null=True, blank=True)
    tool_result = models.TextField(blank=True)
    tool_status = models.CharField(max_length=10, blank=True)  # orchestrator.tools.ToolStatus
    tool_latency_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["call", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["call", "sequence"], name="one_turn_per_sequence")
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"


# The flows' NAME_RE rule (orchestrator/flows/spec.py). \Z, not $: "$" also matches before a
# trailing newline, and RegexValidator only searches, so "book\n" would pass.
tool_name_validator = RegexValidator(
    r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}\Z",
    "Letters, digits, _ and -, starting with a letter (at most 64): the LLM calls it by this name.",
)


def validate_tool_parameters(value: object) -> None:
    validate_json_schema(value)
    if not isinstance(value, dict) or value.get("type") != "object":
        raise ValidationError('Tool parameters must be a JSON Schema with "type": "object".')


def default_tool_parameters() -> dict[str, object]:
    return {"type": "object", "properties": {}, "required": []}


class ProfileTool(models.Model):
    """An HTTP tool the agent may call (docs/tools.md): a signed request to ``url`` with
    the LLM's arguments; the response is what the LLM reads back."""

    class Method(models.TextChoices):
        POST = "POST", "POST (arguments as the JSON body)"
        GET = "GET", "GET (arguments as query parameters)"

    profile = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=64, validators=[tool_name_validator])
    description = models.TextField(
        help_text="What the tool does and when to use it: the LLM reads this to decide."
    )
    parameters = models.JSONField(
        "arguments schema",
        default=default_tool_parameters,
        validators=[validate_tool_parameters],
        help_text='JSON Schema of the arguments, e.g. {"type": "object", "properties": '
        '{"party_size": {"type": "integer"}}, "required": ["party_size"]}.',
    )
    url = models.URLField(max_length=500)
    method = models.CharField(max_length=6, choices=Method.choices, default=Method.POST)
    timeout_s = models.FloatField(
        "timeout (s)",
        default=5.0,
        validators=[MinValueValidator(0.5), MaxValueValidator(10.0)],
        help_text="Past this the LLM is told the tool timed out; the call goes on.",
    )
    secret = models.CharField(
        max_length=200,
        blank=True,
        help_text="HMAC-SHA256 key: each request carries X-Voiceapp-Signature: sha256=<hex> "
        "of its body (the same scheme as the profile webhook).",
    )
    is_active = models.BooleanField("active", default=True)

    class Meta:
        ordering = ["profile", "name"]
        constraints = [
            models.UniqueConstraint(fields=["profile", "name"], name="one_tool_name_per_profile")
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.name in BUILTIN_TOOL_NAMES:
            raise ValidationError({"name": f"“{self.name}” is a built-in tool's name."})


class GlobalStopEvent(models.Model):
    """Audit trail of global stops and resets."""

    action = models.CharField(max_length=10, choices=[("stop", "Stopped"), ("reset", "Reset")])
    at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=150, blank=True, help_text="User or 'api' / 'policy'.")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor or 'policy'} at {self.at:%Y-%m-%d %H:%M:%S}"
