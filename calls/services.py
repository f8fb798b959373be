"""Writes. Every change to calls and turns goes through these keyword-only functions.

Turns are written the moment they happen, so a call in progress shows its transcript in
the admin and a crash loses at most the turn being spoken.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from calls.inline_tasks import enqueue_by_name
from calls.models import (
    AgentProfile,
    Call,
    CallStatus,
    EndReason,
    ExtractionStatus,
    GlobalStopEvent,
    Turn,
    recordings_storage,
)
from orchestrator import audio_health

logger = logging.getLogger(__name__)

OPEN_STATUSES = (CallStatus.RINGING, CallStatus.ACTIVE)
EXTRACT_CALL_TASK = "calls.tasks.extract_call"  # registered by calls/tasks.py


def call_start(
    *,
    profile: AgentProfile | None,
    channel: str,
    external_id: str = "",
    stream_id: str = "",
    from_number: str = "",
    to_number: str = "",
    direction: str = "inbound",
    status: str = CallStatus.ACTIVE,
    config_snapshot: dict[str, Any] | None = None,
) -> Call:
    now = timezone.now()
    call = Call.objects.create(
        profile=profile,
        channel=channel,
        external_id=external_id,
        stream_id=stream_id,
        from_number=from_number,
        to_number=to_number,
        direction=direction,
        status=status,
        started_at=now,
        last_heartbeat_at=now,
        config_snapshot=config_snapshot or {},
    )
    logger.info("call started", extra={"call_id": str(call.id), "channel": channel})
    return call


def call_activate(
    *, call_id: object, stream_id: str = "", config_snapshot: dict[str, Any] | None = None
) -> bool:
    """Mark a ringing call active once its media stream starts. False if it already ended."""
    updates: dict[str, Any] = {"status": CallStatus.ACTIVE, "last_heartbeat_at": timezone.now()}
    if stream_id:
        updates["stream_id"] = stream_id
    if config_snapshot is not None:
        updates["config_snapshot"] = config_snapshot
    return bool(Call.objects.filter(pk=call_id, status__in=OPEN_STATUSES).update(**updates))


def call_set_external_id(*, call_id: object, external_id: str) -> None:
    """An outbound call learns its carrier id (CallSid / call_control_id) once placed."""
    Call.objects.filter(pk=call_id).update(external_id=external_id)


def call_heartbeat(*, call_id: object) -> None:
    Call.objects.filter(pk=call_id, status__in=OPEN_STATUSES).update(
        last_heartbeat_at=timezone.now()
    )


def call_record_dtmf(*, call_id: object, digit: str) -> None:
    with transaction.atomic():
        call = Call.objects.select_for_update().filter(pk=call_id).first()
        if call is None:
            return
        call.dtmf_digits = (call.dtmf_digits + digit)[-200:]
        call.save(update_fields=["dtmf_digits"])


def turn_record(
    *,
    call_id: object,
    role: str,
    text: str,
    started_at: datetime,
    ended_at: datetime,
    sequence: int | None = None,
    interrupted: bool = False,
    metrics: dict[str, Any] | None = None,
    tool: dict[str, Any] | None = None,
) -> Turn:
    """Store a transcript turn. ``tool``: a tool turn's name, arguments, result, status
    and latency_ms (``orchestrator.contracts.ToolTurn.as_dict()``).

    ``sequence`` is the session's own number for the turn: a retried write (the first
    attempt may have committed before the connection dropped) finds its row instead of
    adding a second one, and a turn that was lost leaves a visible gap. Without it the
    turn takes the next free number (admin tools, tests)."""
    fields: dict[str, Any] = {
        "role": role,
        "text": text,
        "started_at": started_at,
        "ended_at": ended_at,
        "interrupted": interrupted,
        "metrics": metrics or {},
    }
    if tool is not None:
        fields.update(
            tool_name=str(tool.get("name", ""))[:64],
            tool_arguments=tool.get("arguments"),
            tool_result=str(tool.get("result", "")),
            tool_status=str(tool.get("status", ""))[:10],
            tool_latency_ms=tool.get("latency_ms"),
        )
    if sequence is not None:
        turn, _ = Turn.objects.get_or_create(call_id=call_id, sequence=sequence, defaults=fields)
        _touch(call_id)
        return turn
    for attempt in range(5):
        try:
            with transaction.atomic():
                last = Turn.objects.filter(call_id=call_id).aggregate(n=Max("sequence"))["n"]
                turn = Turn.objects.create(call_id=call_id, sequence=(last or 0) + 1, **fields)
            _touch(call_id)
            return turn
        except IntegrityError:
            # Two writers raced for the same sequence number: take the next one.
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def turn_mark_unanswered(*, call_id: object, sequence: int, reason: str) -> bool:
    """Flag a user turn the agent never answered; False if the turn is not stored."""
    return bool(
        Turn.objects.filter(call_id=call_id, sequence=sequence, role="user").update(
            unanswered=True, unanswered_reason=reason[:300]
        )
    )


def _touch(call_id: object) -> None:
    Call.objects.filter(pk=call_id, status__in=OPEN_STATUSES).update(
        last_heartbeat_at=timezone.now()
    )


def call_end(
    *,
    call_id: object,
    reason: str,
    error: str = "",
    metrics: dict[str, Any] | None = None,
    transferred_to: str = "",
) -> bool:
    """End an open call with exactly one reason. Returns False if it had already ended.
    ``transferred_to``: where the agent transferred the call (kept whoever ended it first:
    the carrier's hang-up webhook may beat the session).

    The conditional UPDATE makes this idempotent across processes: whoever ends the call
    first (session, carrier hang-up webhook, orphan sweeper) sets the reason.
    """
    status = CallStatus.FAILED if reason == EndReason.ERROR else CallStatus.ENDED
    updates: dict[str, Any] = {
        "status": status,
        "end_reason": reason,
        "ended_at": timezone.now(),
        "error_detail": error[:4000],
    }
    if metrics is not None:
        updates["metrics"] = metrics
        if (health := metrics.get("audio_health")) is not None:
            updates["audio_issues"] = audio_health.issues(health)
    with transaction.atomic():
        ended = bool(Call.objects.filter(pk=call_id, status__in=OPEN_STATUSES).update(**updates))
        if ended:
            logger.info("call ended: %s", reason, extra={"call_id": str(call_id)})
            transaction.on_commit(lambda: _enqueue_extraction(call_id))
    if not ended and metrics:
        # The carrier's hang-up webhook may have ended the call first; keep the session's metrics.
        Call.objects.filter(pk=call_id, metrics={}).update(
            metrics=metrics, audio_issues=updates.get("audio_issues")
        )
    if not ended and error:
        # ... and the session's error detail, when the first ending had none.
        Call.objects.filter(pk=call_id, error_detail="").update(error_detail=error[:4000])
    if transferred_to:
        Call.objects.filter(pk=call_id).update(transferred_to=transferred_to[:200])
    return ended


def call_set_answered_by(
    *, call_id: object, answered_by: str, keep: tuple[str, ...] = ()
) -> bool:
    """Store who answered an outbound call (the carrier's answering-machine verdict).

    A later verdict replaces an earlier one (a machine's greeting ending after it was
    detected), except a stored value listed in ``keep``: a retried delivery of the earlier
    event must not undo the later one. Stored whether or not the call is still open.
    Returns False when nothing was written."""
    return bool(
        Call.objects.filter(pk=call_id)
        .exclude(answered_by__in=keep)
        .update(answered_by=answered_by[:40])
    )


def _enqueue_extraction(call_id: object) -> None:
    # By the task's name: calls/tasks.py imports this module, not the other way round.
    # Never on the ending call's own thread, even without a broker (calls/inline_tasks.py).
    enqueue_by_name(EXTRACT_CALL_TASK, str(call_id))


def calls_sweep_orphaned(*, older_than: timedelta) -> list[str]:
    """End open calls whose session stopped sending heartbeats (its process died)."""
    cutoff = timezone.now() - older_than
    stale = Call.objects.filter(status__in=OPEN_STATUSES).filter(
        Q(last_heartbeat_at__lt=cutoff) | Q(last_heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    ended: list[str] = []
    for call_id in stale.values_list("id", flat=True):
        if call_end(
            call_id=call_id, reason=EndReason.ORPHANED, error="no heartbeat from its session"
        ):
            ended.append(str(call_id))
    if ended:
        logger.warning("ended %d orphaned call(s)", len(ended))
    return ended


def call_set_extraction(
    *, call_id: object, status: str, data: dict[str, Any] | None = None, error: str = ""
) -> None:
    Call.objects.filter(pk=call_id).update(
        extraction_status=status, extraction=data, extraction_error=error[:4000]
    )


def call_set_webhook_status(*, call_id: object, status: str) -> None:
    """How the profile's webhook went for this call ("delivered", "failed: …")."""
    Call.objects.filter(pk=call_id).update(webhook_status=status[:40])


# --- Call recordings (docs/recordings.md) ---------------------------------------------------


def call_recording_store(
    *, call_id: object, spool_path: Path, duration_s: float | None = None
) -> bool:
    """Move a finished (or crash-truncated) spool file into the recordings storage as
    ``recordings/YYYY/MM/DD/<call id>.ogg`` and note it on the call; the spool file is
    removed. Idempotent: a call that already has its recording keeps it. ``duration_s``
    unknown (a file a crashed process left): read from the file. False when nothing was
    stored (no such call, an empty file, stored already)."""
    from calls import recordings

    if not spool_path.exists():  # never started, or stored already
        return False
    call = Call.objects.filter(pk=call_id).first()
    if call is None or call.recording:
        spool_path.unlink(missing_ok=True)
        return False
    if duration_s is None:
        try:
            duration_s = recordings.probe_duration(spool_path)
        except recordings.UnreadableRecording:  # not even its header made it to disk
            logger.warning("unreadable recording spool file %s, removed", spool_path,
                           exc_info=True, extra={"call_id": str(call_id)})  # fmt: skip
            duration_s = 0.0
        except Exception:  # noqa: BLE001 - PyAV missing, EIO, permissions: not the file's fault
            # The recording may be perfectly good: keep it for the next sweep (or a person).
            logger.error("could not read recording spool file %s; left in place", spool_path,
                         exc_info=True, extra={"call_id": str(call_id)})  # fmt: skip
            return False
    if duration_s <= 0:
        spool_path.unlink(missing_ok=True)
        return False
    storage = recordings_storage()
    with spool_path.open("rb") as fh:
        name = storage.save(recordings.storage_name(call), File(fh))
    size = storage.size(name)
    stored = Call.objects.filter(pk=call_id, recording="").update(
        recording=name, recording_duration_s=round(duration_s, 3), recording_bytes=size
    )
    if not stored:  # another process stored it meanwhile (runtime and sweeper)
        storage.delete(name)
    spool_path.unlink(missing_ok=True)
    logger.info("recording stored: %s (%.1f s, %d bytes)", name, duration_s, size,
                extra={"call_id": str(call_id)})  # fmt: skip
    return bool(stored)


def recordings_store_leftovers(*, older_than: timedelta) -> list[str]:
    """Store the spool files a crashed process left (their calls ended by the orphan
    sweeper): files untouched for ``older_than`` whose call is no longer open. Files of
    calls that no longer exist are removed."""
    from calls import recordings

    cutoff = timezone.now().timestamp() - older_than.total_seconds()
    stored: list[str] = []
    for call_id, path in recordings.spooled_call_ids():
        try:
            if path.stat().st_mtime > cutoff:
                continue  # being written, or just finished and being stored by its process
        except FileNotFoundError:
            continue
        try:
            still_open = Call.objects.filter(pk=call_id, status__in=OPEN_STATUSES).exists()
        except (ValidationError, ValueError):  # not a call id: not ours to touch
            continue
        if not still_open and call_recording_store(call_id=call_id, spool_path=path):
            stored.append(call_id)
    if stored:
        logger.warning("stored %d recording(s) left by a crashed process", len(stored))
    return stored


def call_recording_delete(*, call: Call) -> bool:
    """Delete a call's recording (file and waveform cache) and clear its fields. False
    when a file could not be deleted: the fields are kept, so the next retention sweep
    tries again (cleared first, the file would stay in the storage with nothing pointing
    at it)."""
    name = call.recording.name
    if not name:
        return True
    if not recording_files_delete(name=name):
        return False
    Call.objects.filter(pk=call.pk).update(
        recording="", recording_duration_s=None, recording_bytes=None
    )
    call.recording.name = ""
    return True


def recording_files_delete(*, name: str) -> bool:
    """The stored file and its waveform cache (a call's ``post_delete`` uses this too).
    True when both are gone; a failure is logged at ERROR and gives False. A file already
    missing is no failure: Django's storages (local and S3) delete a missing name quietly."""
    from calls import recordings

    storage = recordings_storage()
    deleted = True
    for path in (name, recordings.peaks_name(name)):
        try:
            storage.delete(path)
        except Exception:  # noqa: BLE001 - any storage error: the caller keeps the name to retry
            logger.error("could not delete recording file %s", path, exc_info=True)
            deleted = False
    return deleted


def recordings_delete_expired(*, older_than: timedelta, limit: int = 500) -> int:
    """Retention: delete the recordings of calls started more than ``older_than`` ago
    (at most ``limit`` per run; the sweeper runs every minute). A recording whose file
    could not be deleted keeps its fields and is tried again next run. Returns how many
    were deleted."""
    cutoff = timezone.now() - older_than
    expired = Call.objects.filter(started_at__lt=cutoff).exclude(recording="")
    count = failed = 0
    for call in expired.only("id", "recording").order_by("started_at")[:limit]:
        if call_recording_delete(call=call):
            count += 1
        else:
            failed += 1
    if count:
        logger.info("retention: deleted %d recording(s) older than %s", count, older_than)
    if failed:
        logger.error("retention: %d recording(s) could not be deleted, retried next run", failed)
    return count


def call_rerun_extraction(*, call_id: object) -> bool:
    """Reset an ended call's analysis to pending and queue it again (admin action)."""
    reset = (
        Call.objects.filter(pk=call_id)
        .exclude(status__in=OPEN_STATUSES)
        .update(extraction_status=ExtractionStatus.PENDING, extraction=None, extraction_error="")
    )
    if reset:
        transaction.on_commit(lambda: _enqueue_extraction(call_id))
    return bool(reset)


def profile_keep_one_default(*, profile: AgentProfile) -> None:
    """Promoting ``profile`` to default demotes the previous default (exactly one default).

    Runs before every save of a profile (admin, seed, API): ``CallsConfig.ready`` connects
    it to ``pre_save``, so no save can break the one-default constraint.
    """
    if profile.is_default:
        AgentProfile.objects.filter(is_default=True).exclude(pk=profile.pk).update(is_default=False)


COPY_SLUG_MAX = AgentProfile._meta.get_field("slug").max_length


@transaction.atomic
def profile_duplicate(*, profile: AgentProfile) -> AgentProfile:
    """A copy of ``profile`` to try a variant: every setting, its channel overlays and HTTP
    tools, under a free ``<slug>-copy[-N]`` slug and ``<name> (copy)``.

    The copy answers no calls until someone says so: it is not the default and has no phone
    numbers (a number routes to one profile; two claiming it would be ambiguous). Scenarios
    stay with the original (they test that profile; ``scenarios`` copies them if asked).
    """
    overlays = list(profile.overlays.all())
    tools = list(profile.tools.all())
    copy = AgentProfile.objects.get(pk=profile.pk)
    copy.pk = copy.id = None
    copy._state.adding = True
    copy.slug = _free_slug(profile.slug)
    copy.name = f"{profile.name} (copy)"[: AgentProfile._meta.get_field("name").max_length]
    copy.is_default = False
    copy.phone_numbers = ""
    copy.save()
    for related in (*overlays, *tools):
        related.pk = related.id = None
        related._state.adding = True
        related.profile = copy
        related.save()
    logger.info("profile %s duplicated as %s", profile.slug, copy.slug)
    return copy


def _free_slug(slug: str) -> str:
    taken = set(
        AgentProfile.objects.filter(slug__startswith=slug[: COPY_SLUG_MAX - 10]).values_list(
            "slug", flat=True
        )
    )
    for n in range(1, 1000):
        tail = "-copy" if n == 1 else f"-copy-{n}"
        candidate = slug[: COPY_SLUG_MAX - len(tail)] + tail
        if candidate not in taken:
            return candidate
    raise ValidationError(f"no free slug for a copy of {slug!r}")


def global_stop_event_record(*, action: str, actor: str, detail: dict[str, Any]) -> None:
    """Audit trail of the global stop: ``action`` is "stop" or "reset"."""
    GlobalStopEvent.objects.create(action=action, actor=actor, detail=detail)


# The demo prompts are written for the offline 0.5B model: short, concrete, the facts it
# may state (it invents the rest), and one example exchange at the end, which the local
# engine turns into chat turns (orchestrator/engines/local.py, split_example).
# Written for a small local model (measured with bench/offline_booking.py): the facts it
# may state, the four things a booking needs, and one whole example conversation, which
# the local engine turns into chat turns (a small model follows an example far better than
# an instruction). The confirmation repeats the caller's own words for the time ("nine at
# night"): converting them to 21:00 is where the 0.5B went wrong.
DEMO_PROMPT_EN = "\n".join(
    [
        "You are the receptionist of Casa Lola, a restaurant, on the phone. Answer in one short "
        "sentence.",
        "Opening hours: Tuesday to Sunday, 13:00 to 16:00 and 20:00 to 23:30. Closed on Mondays.",
        "A booking needs four things: day, time, number of people, name. Ask only for the next "
        "missing one, never make one up. When you have all four, repeat them and say the "
        "booking is confirmed.",
        "Example:",
        "Caller: Hello, I want a table for two on Saturday.",
        "You: Of course. At what time on Saturday?",
        "Caller: At nine at night.",
        "You: Nine at night, perfect. What name is the booking under?",
        "Caller: Anna Lee.",
        "You: Thank you, Anna. A table for two on Saturday at nine at night for Anna Lee: your "
        "booking is confirmed.",
    ]
)
DEMO_PROMPT_ES = "\n".join(
    [
        "Eres la recepcionista del restaurante Casa Lola, al teléfono. Responde siempre en "
        "español, en una frase corta.",
        "Horario: de martes a domingo, de 13:00 a 16:00 y de 20:00 a 23:30. Los lunes cerramos.",
        "Una reserva necesita cuatro datos: día, hora, número de personas y nombre. Pregunta "
        "solo por el primer dato que falte. Nunca inventes datos. Cuando tengas los cuatro, "
        "repítelos y di que la reserva está confirmada.",
        "Ejemplo:",
        "Cliente: Buenas, quiero reservar para dos personas el sábado.",
        "Tú: Claro. ¿A qué hora el sábado?",
        "Cliente: A las diez de la noche.",
        "Tú: A las diez, perfecto. ¿A nombre de quién?",
        "Cliente: De Pedro Ruiz.",
        "Tú: Gracias, Pedro. Mesa para dos el sábado a las diez de la noche a nombre de Pedro "
        "Ruiz: su reserva está confirmada.",
    ]
)
# Earlier seeds' prompts: a demo row that still has one was never edited, and gets the
# current prompt (an operator's own prompt is never touched).
_OLD_DEMO_PROMPTS = frozenset(
    {
        "\n".join(
            [
                (
                    'You are the receptionist of Casa Lola, a restaurant. You are on the phone: '
                    'answer in one or two short sentences, never lists.'
                ),
                (
                    'Opening hours: Tuesday to Sunday, 13:00 to 16:00 and 20:00 to 23:30. '
                    'Closed on '
                    'Mondays.'
                ),
                (
                    'To book a table you need the day, the time, the number of people and a name. '
                    'Ask only for what is still missing, one question at a time. When you have all '
                    'four, repeat them and confirm the booking.'
                ),
                'Example:',
                'Caller: A table for two on Saturday, please.',
                'You: Of course. At what time on Saturday?',
            ]
        ),
        "\n".join(
            [
                (
                    'Eres la recepcionista del restaurante Casa Lola. Hablas por teléfono: '
                    'responde '
                    'en una o dos frases cortas, sin listas.'
                ),
                (
                    'Horario: de martes a domingo, de 13:00 a 16:00 y de 20:00 a 23:30. Los lunes '
                    'cerramos.'
                ),
                (
                    'Para reservar una mesa necesitas el día, la hora, el número de personas y un '
                    'nombre. Pide solo lo que falte, una pregunta cada vez. Cuando tengas los '
                    'cuatro, repítelos y confirma la reserva.'
                ),
                'Ejemplo:',
                'Cliente: Una mesa para dos el sábado, por favor.',
                'Tú: Claro. ¿A qué hora el sábado?',
            ]
        ),
        "You are the friendly receptionist of Casa Lola, a restaurant. Help callers "
        "book a table: ask for the day, time, number of people and a name. "
        "Answer in one or two short sentences."
    }
)
DEMO_EXTRACTION_SCHEMA = {
    "type": "object",
    "properties": {
        "party_size": {"type": ["integer", "null"]},
        "booking_time": {"type": ["string", "null"]},
        "customer_name": {"type": ["string", "null"]},
    },
}


def profile_ensure_demo() -> AgentProfile:
    """Create the demo profile used by `make run` (offline engines, English)."""
    return _profile_ensure(
        slug="demo",
        defaults={
            "name": "Demo receptionist",
            "is_default": not AgentProfile.objects.filter(is_default=True).exists(),
            "language": "en-US",
            "system_prompt": DEMO_PROMPT_EN,
            "temperature": 0.3,  # a small model drifts less from the example
            "greeting": "Hello, this is Casa Lola. How can I help you?",
            "idle_reprompt": "Are you still there?",
            "goodbye_message": "Thank you for calling. Goodbye!",
            "apology_message": "Sorry, we are having a problem. The call will end now.",
            "tool_filler": "One moment, let me check.|Still checking, thank you for waiting.",
            "transfer_message": "I'll put you through to a person. One moment, please.",
            "voicemail_message": (
                "Hello, this is Casa Lola returning your call about a booking. Please call "
                "us back when you can. Thank you!"
            ),
            "extraction_schema": DEMO_EXTRACTION_SCHEMA,
        },
    )


def profile_ensure_demo_es() -> AgentProfile:
    """The same restaurant in Spanish (es-ES), seeded beside the English demo."""
    return _profile_ensure(
        slug="demo-es",
        defaults={
            "name": "Demo recepcionista (español)",
            "is_default": False,
            "language": "es-ES",
            "system_prompt": DEMO_PROMPT_ES,
            "temperature": 0.3,
            # The 0.5B does not hold a Spanish conversation (bench/offline_booking.py).
            "llm_model": "qwen2.5-1.5b",
            "greeting": "Hola, Casa Lola, ¿en qué puedo ayudarle?",
            "idle_reprompt": "¿Sigue ahí?",
            "goodbye_message": "Gracias por llamar. ¡Adiós!",
            "apology_message": "Lo sentimos, tenemos un problema. La llamada terminará ahora.",
            "tool_filler": "Un momento, lo compruebo.|Sigo comprobándolo, gracias por esperar.",
            "transfer_message": "Le paso con una persona. Un momento, por favor.",
            "voicemail_message": (
                "Hola, le llamamos de Casa Lola por su reserva. Llámenos cuando pueda. "
                "¡Gracias!"
            ),
            "extraction_schema": DEMO_EXTRACTION_SCHEMA,
        },
    )


def profile_ensure_demo_flow() -> AgentProfile:
    """The English demo driven by the demo booking flow (docs/flows.md). Transitions are
    tool calls; the local LLM follows it by a per-node JSON grammar (demo quality,
    docs/flows.md)."""
    from calls.demo_flows import DEMO_FLOW_EN

    return _profile_ensure(
        slug="demo-flow",
        defaults={
            "name": "Demo booking flow",
            "is_default": False,
            "language": "en-US",
            "system_prompt": (
                "You are the receptionist of Casa Lola, a restaurant, on the phone. Answer in "
                "one short sentence. Opening hours: Tuesday to Sunday, 13:00 to 16:00 and "
                "20:00 to 23:30. Closed on Mondays."
            ),
            "temperature": 0.3,
            "greeting": "Hello, this is Casa Lola. How can I help you?",
            "idle_reprompt": "Are you still there?",
            "goodbye_message": "Thank you for calling. Goodbye!",
            "apology_message": "Sorry, we are having a problem. The call will end now.",
            "tool_filler": "One moment, let me check.",
            "transfer_message": "I'll put you through to a person. One moment, please.",
            # A placeholder number: set the restaurant's own before taking real calls.
            "transfer_destinations": "Front desk = +34910000000",
            "flow": DEMO_FLOW_EN,
            "extraction_schema": DEMO_EXTRACTION_SCHEMA,
        },
    )


def profile_ensure_demo_flow_es() -> AgentProfile:
    """The Spanish demo booking flow (es-ES): the same graph, tasks and lines in Spanish."""
    from calls.demo_flows import DEMO_FLOW_ES

    return _profile_ensure(
        slug="demo-flow-es",
        defaults={
            "name": "Demo flujo de reservas (español)",
            "is_default": False,
            "language": "es-ES",
            "system_prompt": (
                "Eres la recepcionista del restaurante Casa Lola, al teléfono. Responde siempre "
                "en español, en una frase corta. Horario: de martes a domingo, de 13:00 a 16:00 "
                "y de 20:00 a 23:30. Los lunes cerramos."
            ),
            "temperature": 0.3,
            "greeting": "Hola, Casa Lola, ¿en qué puedo ayudarle?",
            "idle_reprompt": "¿Sigue ahí?",
            "goodbye_message": "Gracias por llamar. ¡Adiós!",
            "apology_message": "Lo sentimos, tenemos un problema. La llamada terminará ahora.",
            "tool_filler": "Un momento, lo compruebo.",
            "transfer_message": "Le paso con una persona. Un momento, por favor.",
            "transfer_destinations": "Recepción = +34910000000",  # a placeholder number
            "flow": DEMO_FLOW_ES,
            "extraction_schema": DEMO_EXTRACTION_SCHEMA,
        },
    )


# Fingerprints (sha256 of the canonical JSON, first 16 hex digits) of demo flows an earlier
# version seeded: a demo-flow profile still holding one was never edited and gets the
# current flow (a flow an operator changed is kept).
_OLD_DEMO_FLOWS = frozenset({"32100136e4a22b6f", "b1c2f0241a3c820b"})


def _flow_fingerprint(flow: Any) -> str:
    return hashlib.sha256(json.dumps(flow, sort_keys=True).encode()).hexdigest()[:16]


def _profile_ensure(*, slug: str, defaults: dict[str, Any]) -> AgentProfile:
    profile, created = AgentProfile.objects.get_or_create(slug=slug, defaults=defaults)
    if not created and "flow" in defaults and _flow_fingerprint(profile.flow) in _OLD_DEMO_FLOWS:
        profile.flow = defaults["flow"]
        profile.save(update_fields=["flow", "updated_at"])
    if not created and profile.system_prompt in _OLD_DEMO_PROMPTS:
        # The prompt was never edited: the current one, and the settings written with it
        # where they still hold the earlier seed's values (an operator's choice is kept).
        fields = ["system_prompt"]
        for field, old in (("temperature", 0.6), ("llm_model", "")):
            if field in defaults and getattr(profile, field) == old:
                fields.append(field)
        for field in fields:
            setattr(profile, field, defaults[field])
        profile.save(update_fields=[*fields, "updated_at"])
    return profile
