"""Reads. Views, consumers and tasks ask here instead of querying the ORM themselves."""

from __future__ import annotations

import datetime
import logging
import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from django.conf import settings
from django.db import connections
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import TruncDate
from django.utils import timezone

from calls.models import (
    AgentProfile,
    Call,
    CallStatus,
    ChannelOverlay,
    EndReason,
    ProfileTool,
    Turn,
    VoicemailAction,
    backchannel_word_list,
    transfer_target_list,
    validate_overrides,
)
from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.flows import Flow, FlowError, parse_flow
from orchestrator.tools import ToolSpec

logger = logging.getLogger(__name__)


class ProfileNotFound(LookupError):
    pass


def profile_get(*, slug: str | None = None) -> AgentProfile:
    """The active profile with ``slug``, or the default profile when ``slug`` is empty."""
    profiles = AgentProfile.objects.filter(is_active=True)
    profile = (
        profiles.filter(slug=slug).first() if slug else profiles.filter(is_default=True).first()
    )
    if profile is None and not slug:
        profile = profiles.order_by("pk").first()
    if profile is None and not slug:
        # Every caller hears the apology until one exists: say why, where the operator looks.
        logger.warning(
            "no active agent profile: calls get the apology; create one in the admin "
            "or run `manage.py seed_demo --if-no-profile`"
        )
    if profile is None:
        raise ProfileNotFound(f"no active profile {slug!r}" if slug else "no active profile")
    return profile


def profile_for_number(*, number: str) -> AgentProfile | None:
    number = number.strip()
    if not number:
        return None
    for profile in AgentProfile.objects.filter(is_active=True, phone_numbers__contains=number):
        if number in profile.phone_number_list():
            return profile
    return None


def profiles_active() -> QuerySet[AgentProfile]:
    return AgentProfile.objects.filter(is_active=True)


def _resolve_engine(role: str, name: str) -> str:
    """Turn "auto" into a concrete engine: the cloud vendor when its key is set, else local."""
    if name != "auto":
        return name
    if role in ("stt", "llm") and settings.GROQ_API_KEY:
        return "groq"
    if role == "tts" and settings.AZURE_SPEECH_KEY:
        return "azure"
    return "local"


def _local_only(role: str, model: str) -> bool:
    """A model name only the local engine knows (weights or STT choices it ships)."""
    from orchestrator.engines import local

    names = set(local.LLM_WEIGHTS) if role == "llm" else set(local.STT_MODELS) - {""}
    return model in names


def _default_model(role: str, engine: str) -> str:
    if engine == "groq":
        return settings.GROQ_STT_MODEL if role == "stt" else settings.GROQ_LLM_MODEL
    return ""


def _chain(role: str, values: dict[str, object]) -> tuple[EngineSpec, ...]:
    first = _resolve_engine(role, str(values[f"{role}_engine"]))
    model = str(values[f"{role}_model"])
    if first != "local" and values[f"{role}_engine"] == "auto" and _local_only(role, model):
        # "auto" picked a cloud vendor (its key is set) for a profile that names a local
        # model (the Spanish demo's qwen2.5-1.5b): the vendor's default model, not that name.
        model = ""
    model = model or _default_model(role, first)
    voice = str(values["voice_name"]) if role == "tts" else ""
    specs = [EngineSpec(engine=first, model=model, voice=voice)]
    for name in str(values[f"{role}_fallback"]).split(","):
        name = name.strip()
        if name and name != first:
            # A fallback engine uses its own default model: the primary's model name
            # means nothing to another vendor.
            specs.append(EngineSpec(engine=name, model=_default_model(role, name), voice=""))
    return tuple(specs)


def effective_values(*, profile: AgentProfile, channel: str) -> dict[str, object]:
    """Profile fields with the channel overlay applied (validated again: never trust JSON)."""
    from calls.models import OVERLAY_FIELDS

    values: dict[str, object] = {name: getattr(profile, name) for name in OVERLAY_FIELDS}
    overlay = ChannelOverlay.objects.filter(profile=profile, channel=channel).first()
    if overlay is not None:
        values.update(validate_overrides(overlay.overrides, profile))
    return values


def call_config_for(*, profile: AgentProfile, channel: str, call_id: str = "") -> CallConfig:
    """The plain config the orchestrator consumes for ``profile`` on ``channel``."""
    v = effective_values(profile=profile, channel=channel)
    return CallConfig(
        call_id=call_id,
        channel=channel,
        profile_slug=profile.slug,
        language=str(v["language"]),
        system_prompt=str(v["system_prompt"]),
        greeting=str(v["greeting"]),
        stt=_chain("stt", v),
        llm=_chain("llm", v),
        tts=_chain("tts", v),
        temperature=float(v["temperature"]),
        max_tokens=int(v["max_tokens"]),
        voice_pacing_ms=int(v["voice_pacing_ms"]),
        turn_detection=str(v["turn_detection"]),
        vad_stop_ms=int(v["vad_stop_ms"]),
        max_turn_silence_ms=int(v["max_turn_silence_ms"]),
        turn_threshold=float(v["turn_threshold"]),
        silence_timeout_ms=int(v["silence_timeout_ms"]),
        stt_partial_interval_ms=int(v["stt_partial_interval_ms"]),
        noise_suppression=bool(v["noise_suppression"]),
        barge_in_enabled=bool(v["barge_in_enabled"]),
        barge_in_min_ms=int(v["barge_in_min_ms"]),
        backchannel_words=backchannel_word_list(str(v["backchannel_words"])),
        idle_timeout_s=float(v["idle_timeout_s"]),
        idle_reprompt=str(v["idle_reprompt"]),
        max_call_seconds=int(v["max_call_seconds"]),
        goodbye_message=str(v["goodbye_message"]),
        apology_message=str(v["apology_message"]),
        # The profile's own busy line, else the stock one in its language.
        busy_message=profile.busy_message or busy_message(str(v["language"])),
        recorder_retry_s=float(settings.RECORDER_RETRY_SECONDS),
        tools=profile_tool_specs(profile=profile),
        end_call_enabled=profile.end_call_enabled,
        transfer_targets=transfer_target_list(profile.transfer_destinations),
        transfer_message=profile.transfer_message,
        transfer_failed_message=_for_language(TRANSFER_FAILED_MESSAGES, str(v["language"])),
        tool_filler=profile.tool_filler,
        voicemail_action=(
            profile.voicemail_action
            if profile.voicemail_action != VoicemailAction.OFF
            else VoicemailAction.HANG_UP
        ),
        voicemail_message=profile.voicemail_message,
        record_calls=profile.record_calls,
        recording_consent_line=profile.recording_consent_line.strip(),
        flow=profile_flow(profile=profile),
    )


def profile_flow(*, profile: AgentProfile) -> Flow | None:
    """The profile's flow as the orchestrator runs it. Checked on save; one stored
    otherwise (a script, a later format change) that no longer parses is logged and the
    call follows the system prompt alone, rather than not being answered."""
    if not profile.flow:
        return None
    try:
        # Tools are not checked here: one removed since the flow was saved is not offered;
        # nor are "say" lines (a flow saved before placeholders existed keeps running).
        return parse_flow(profile.flow, check_lines=False)
    except FlowError as exc:
        logger.error("profile %s: its flow is invalid, calls ignore it: %s", profile.slug, exc)
        return None


def profile_tool_specs(*, profile: AgentProfile) -> tuple[ToolSpec, ...]:
    """The profile's active HTTP tools, as the orchestrator runs them."""
    return tuple(tool_spec(tool=tool) for tool in profile.tools.filter(is_active=True))


def tool_spec(*, tool: ProfileTool) -> ToolSpec:
    """One HTTP tool as the orchestrator runs it (also the admin's "test this tool", which
    tests inactive tools too)."""
    return ToolSpec(
        name=tool.name,
        description=tool.description,
        parameters=tool.parameters,
        kind="http",
        url=tool.url,
        method=tool.method,
        timeout_s=float(tool.timeout_s),
        secret=tool.secret,
    )


# Said when a transfer the agent attempted failed at the carrier (the call goes on).
TRANSFER_FAILED_MESSAGES = {
    "es": "Lo siento, no he podido pasarle la llamada. ¿Puedo ayudarle en algo más?",
    "en": "Sorry, I could not transfer your call. Is there anything else I can help with?",
}


def _for_language(messages: dict[str, str], language: str) -> str:
    return messages.get(language.split("-")[0].lower(), messages["en"])


# What a caller hears when this process is overloaded (then the call ends as "busy").
BUSY_MESSAGES = {
    "es": "Lo sentimos, todas nuestras líneas están ocupadas. Por favor, llame más tarde.",
    "en": "Sorry, all our lines are busy right now. Please call again in a few minutes.",
}


def busy_message(language: str) -> str:
    return BUSY_MESSAGES.get(language.split("-")[0].lower(), BUSY_MESSAGES["en"])


def config_snapshot(config: CallConfig) -> dict[str, object]:
    data = asdict(config)
    data.pop("extra", None)
    for tool in data.get("tools", ()):
        tool["secret"] = "***" if tool.get("secret") else ""  # never stored in the call record
    return data


def engine_credentials() -> EngineCredentials:
    return EngineCredentials(
        groq_api_key=settings.GROQ_API_KEY,
        groq_base_url=settings.GROQ_BASE_URL,
        openai_api_key=settings.OPENAI_API_KEY,
        openai_base_url=settings.OPENAI_BASE_URL,
        azure_speech_key=settings.AZURE_SPEECH_KEY,
        azure_speech_region=settings.AZURE_SPEECH_REGION,
        azure_speech_endpoint=settings.AZURE_SPEECH_ENDPOINT,
    )


def call_get(*, call_id: object) -> Call | None:
    return Call.objects.select_related("profile").filter(pk=call_id).first()


def call_by_external_id(*, channel: str, external_id: str) -> Call | None:
    """The call a carrier knows as ``external_id`` (CallSid / call_control_id)."""
    if not external_id:
        return None
    calls = Call.objects.select_related("profile")
    return calls.filter(channel=channel, external_id=external_id).first()


def call_answered_by(*, call_id: object) -> str:
    """The stored answering-machine verdict of a call ("" while there is none)."""
    found = Call.objects.filter(pk=call_id).values_list("answered_by", flat=True).first()
    return found or ""


def call_turns(*, call_id: object) -> list[Turn]:
    return list(Turn.objects.filter(call_id=call_id).order_by("sequence"))


def call_voice_to_voice_ms(*, call: Call) -> list[float]:
    """Voice-to-voice latency of each answered turn, in call order."""
    return [
        float(t.metrics["voice_to_voice_ms"])
        for t in call.turns.all()
        if t.role == "assistant"
        and isinstance(t.metrics, dict)
        and t.metrics.get("voice_to_voice_ms") is not None
    ]


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --- The admin's call list: filters and export ---------------------------------------------


def calls_with_slow_turns(
    *, calls: QuerySet[Call], slow: bool = True, threshold_ms: float | None = None
) -> QuerySet[Call]:
    """``calls`` with (``slow``) or without a reply whose voice-to-voice latency was above
    ``threshold_ms`` (default ``settings.SLOW_TURN_MS``). One EXISTS subquery on the turns'
    JSON metrics, the same on PostgreSQL (jsonb) and SQLite (JSON1): no join, no DISTINCT."""
    threshold = settings.SLOW_TURN_MS if threshold_ms is None else threshold_ms
    slow_turns = Turn.objects.filter(
        call=OuterRef("pk"), role="assistant", metrics__voice_to_voice_ms__gt=threshold
    )
    return calls.filter(Exists(slow_turns)) if slow else calls.exclude(Exists(slow_turns))


def calls_with_unanswered_turns(
    *, calls: QuerySet[Call], unanswered: bool = True
) -> QuerySet[Call]:
    """``calls`` with (``unanswered``) or without a caller's turn the agent never answered."""
    turns = Turn.objects.filter(call=OuterRef("pk"), role="user", unanswered=True)
    return calls.filter(Exists(turns)) if unanswered else calls.exclude(Exists(turns))


def calls_in_pages(*, calls: QuerySet[Call], page_size: int = 200) -> Iterator[list[Call]]:
    """``calls``, newest first, one page at a time, each call with its profile and its turns
    in order: an export of any size holds one page in memory.

    Keyset pages on (started_at, id) rather than one server-side cursor: each page is its
    own short query, so a slow download holds no cursor or transaction open, and a page
    can run on whichever thread the server streams from."""
    ordered = (
        calls.select_related("profile")
        .prefetch_related(None)
        .prefetch_related(Prefetch("turns", queryset=Turn.objects.order_by("sequence")))
        .order_by("-started_at", "-pk")
    )
    last: Call | None = None
    while True:
        page_query = ordered
        if last is not None:
            page_query = ordered.filter(
                Q(started_at__lt=last.started_at) | Q(started_at=last.started_at, pk__lt=last.pk)
            )
        page = list(page_query[:page_size])
        if page:
            yield page
        if len(page) < page_size:
            return
        last = page[-1]


def call_turn_counts(*, call: Call, slow_ms: float | None = None) -> dict[str, int]:
    """Turns, slow replies and unanswered caller turns of a call whose turns are loaded."""
    threshold = settings.SLOW_TURN_MS if slow_ms is None else slow_ms
    turns = call.turns.all()
    return {
        "turns": len(turns),
        "slow_turns": sum(1 for v in call_voice_to_voice_ms(call=call) if v > threshold),
        "unanswered_turns": sum(1 for t in turns if t.role == "user" and t.unanswered),
    }


def call_export_record(*, call: Call, with_turns: bool = False) -> dict[str, object]:
    """One call as the admin's CSV/JSON export writes it (turns only for JSON)."""
    median = median_or_none(call_voice_to_voice_ms(call=call))
    record: dict[str, object] = {
        "id": str(call.pk),
        "started_at": call.started_at.isoformat(),
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        "duration_s": (None if call.duration_seconds is None else round(call.duration_seconds, 1)),
        "channel": call.channel,
        "direction": call.direction,
        "profile": call.profile.slug if call.profile else None,
        "status": call.status,
        "end_reason": call.end_reason,
        "transferred_to": call.transferred_to,
        **call_turn_counts(call=call),
        "median_voice_to_voice_ms": None if median is None else round(median),
        "audio_issues": call.audio_issues,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "external_id": call.external_id,
    }
    if with_turns:
        record["metrics"] = call.metrics
        record["extraction"] = call.extraction
        record["turns"] = [turn_export_record(turn=t, call=call) for t in call.turns.all()]
    return record


def turn_export_record(*, turn: Turn, call: Call) -> dict[str, object]:
    record: dict[str, object] = {
        "sequence": turn.sequence,
        "role": turn.role,
        "text": turn.text,
        "offset_s": round((turn.started_at - call.started_at).total_seconds(), 2),
        "started_at": turn.started_at.isoformat(),
        "ended_at": turn.ended_at.isoformat(),
        "interrupted": turn.interrupted,
        "unanswered": turn.unanswered,
        "unanswered_reason": turn.unanswered_reason,
        "metrics": turn.metrics,
    }
    if turn.role == "tool":
        record["tool"] = {
            "name": turn.tool_name,
            "arguments": turn.tool_arguments,
            "result": turn.tool_result,
            "status": turn.tool_status,
            "latency_ms": turn.tool_latency_ms,
        }
    return record


# --- The admin's overview across calls ------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class DayCount:
    day: datetime.date
    calls: int
    errors: int


@dataclass(slots=True, kw_only=True)
class LatencyGroup:
    """Voice-to-voice of the replies in one profile × channel (nearest-rank percentiles)."""

    profile: str
    channel: str
    replies: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(slots=True, kw_only=True)
class CallsOverview:
    since: datetime.date
    until: datetime.date
    calls: int
    errors: int  # failed, or ended by an error
    per_day: list[DayCount]  # every day of the range, quiet days included
    end_reasons: list[tuple[str, int]]  # (end_reason, calls), most first; "" = not ended
    latency: list[LatencyGroup]  # all replies first, then per profile and channel
    intents: list[tuple[str, int]]  # (intent, calls) of analysed calls, most first

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None


def day_bounds(
    *, since: datetime.date, until: datetime.date
) -> tuple[datetime.datetime, datetime.datetime]:
    """The start of ``since`` and the end of ``until`` (the next midnight), server time zone."""
    zone = timezone.get_current_timezone()
    start = datetime.datetime.combine(since, datetime.time.min, tzinfo=zone)
    next_day = until + datetime.timedelta(days=1)
    return start, datetime.datetime.combine(next_day, datetime.time.min, tzinfo=zone)


def calls_in_range(
    *, since: datetime.date, until: datetime.date, profile_id: int | None = None
) -> QuerySet[Call]:
    """Calls started from ``since`` to ``until`` (both whole days, the server's time zone)."""
    start, end = day_bounds(since=since, until=until)
    calls = Call.objects.filter(started_at__gte=start, started_at__lt=end)
    return calls.filter(profile_id=profile_id) if profile_id is not None else calls


_DELETED_PROFILE = "(deleted profile)"


def _latency_group(profile_name: str, channel: str, replies: int, p50: float | None,
                   p95: float | None) -> LatencyGroup:  # fmt: skip
    return LatencyGroup(
        profile=profile_name, channel=channel, replies=replies,
        p50_ms=None if p50 is None else round(p50, 1),
        p95_ms=None if p95 is None else round(p95, 1),
    )  # fmt: skip


def _latency_groups_python(replies: QuerySet[Turn]) -> list[LatencyGroup]:
    """SQLite: every reply's figure read here (no percentile function in SQL)."""
    from orchestrator.stats import percentile

    rows = replies.values_list("call__profile__name", "call__channel", "metrics__voice_to_voice_ms")
    groups: dict[tuple[str, str], list[float]] = {}
    every: list[float] = []
    for profile_name, channel, value in rows.iterator(chunk_size=2000):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        every.append(float(value))
        groups.setdefault((profile_name or _DELETED_PROFILE, channel), []).append(float(value))

    def group(profile_name: str, channel: str, values: list[float]) -> LatencyGroup:
        return _latency_group(profile_name, channel, len(values),
                              percentile(values, 50), percentile(values, 95))  # fmt: skip

    latency = [group("All profiles", "all channels", every)] if every else []
    return latency + [group(p, c, v) for (p, c), v in sorted(groups.items())]


def _latency_groups_sql(replies: QuerySet[Turn]) -> list[LatencyGroup]:
    """PostgreSQL: p50/p95 per profile and channel, and over all, in one query.

    percentile_disc(q) is the first value whose rank / n >= q, i.e. rank ceil(q * n): the
    nearest-rank percentile of orchestrator.stats.percentile. Only JSON numbers count (as
    the Python path's isinstance check); GROUPING() tells the overall row from a group of a
    deleted profile (whose name is NULL as well)."""
    inner, params = (
        replies.values(pname=F("call__profile__name"), chan=F("call__channel"),
                       j=F("metrics__voice_to_voice_ms"))  # fmt: skip
        .order_by()
        .query.sql_with_params()
    )
    sql = f"""
        WITH r AS (
            SELECT pname, chan,
                   CASE WHEN jsonb_typeof(j) = 'number' THEN (j #>> '{{}}')::float8 END AS v
            FROM ({inner}) AS i
        )
        SELECT GROUPING(pname, chan) AS overall, pname, chan, count(v),
               percentile_disc(0.5) WITHIN GROUP (ORDER BY v),
               percentile_disc(0.95) WITHIN GROUP (ORDER BY v)
        FROM r WHERE v IS NOT NULL
        GROUP BY GROUPING SETS ((), (pname, chan))
    """
    with connections[replies.db].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    latency: list[LatencyGroup] = []
    groups: list[LatencyGroup] = []
    for overall, pname, chan, n, p50, p95 in rows:
        if not n:
            continue  # (the overall row of an empty range)
        if overall:
            latency.append(_latency_group("All profiles", "all channels", n, p50, p95))
        else:
            groups.append(_latency_group(pname or _DELETED_PROFILE, chan, n, p50, p95))
    return latency + sorted(groups, key=lambda g: (g.profile, g.channel))


def calls_overview(
    *, since: datetime.date, until: datetime.date, profile_id: int | None = None
) -> CallsOverview:
    """Calls per day, end reasons, error rate, voice-to-voice p50/p95 per profile and
    channel and the analysed intents, aggregated in the database where SQL can do it the
    same on SQLite and PostgreSQL (counts, GROUP BY day/reason/intent). Percentiles: in SQL
    on PostgreSQL (a month of replies is too many rows to load), in Python on SQLite, which
    has no percentile function; both nearest-rank, as CallStats' stored on each call."""
    calls = calls_in_range(since=since, until=until, profile_id=profile_id)
    error = Q(status=CallStatus.FAILED) | Q(end_reason=EndReason.ERROR)
    totals = calls.aggregate(n=Count("pk"), errors=Count("pk", filter=error))
    by_day = {
        row["day"]: row
        for row in calls.annotate(
            day=TruncDate("started_at", tzinfo=timezone.get_current_timezone())
        )
        .values("day")
        .annotate(n=Count("pk"), errors=Count("pk", filter=error))
        .order_by("day")
    }
    per_day = []
    day = since
    while day <= until:
        row = by_day.get(day) or {"n": 0, "errors": 0}
        per_day.append(DayCount(day=day, calls=row["n"], errors=row["errors"]))
        day += datetime.timedelta(days=1)
    end_reasons = [
        (row["end_reason"], row["n"])
        for row in calls.values("end_reason").annotate(n=Count("pk")).order_by("-n", "end_reason")
    ]
    intents = [
        (row["intent"], row["n"])
        for row in calls.filter(extraction__has_key="intent")
        .annotate(intent=KT("extraction__intent"))
        .values("intent")
        .annotate(n=Count("pk"))
        .order_by("-n", "intent")
        if row["intent"]
    ]
    replies = Turn.objects.filter(
        call__in=calls, role="assistant", metrics__has_key="voice_to_voice_ms"
    )
    if connections[replies.db].vendor == "postgresql":
        latency = _latency_groups_sql(replies)
    else:
        latency = _latency_groups_python(replies)
    return CallsOverview(
        since=since,
        until=until,
        calls=totals["n"],
        errors=totals["errors"],
        per_day=per_day,
        end_reasons=end_reasons,
        latency=latency,
        intents=intents,
    )
