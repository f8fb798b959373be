"""Load and warm the local models the active profiles use, when the server starts.

Without this the first caller after a (re)start waited 5-20 s for the greeting while
the STT (Moonshine or Whisper), piper and llama.cpp loaded on their first use.
``start_in_background()`` is called by ``voiceapp/asgi.py`` (``PRELOAD_ENGINES``, default
on); until it finishes ``/health/ready/`` answers 503 so a load balancer keeps calls away.
Cloud engines are not touched here: readiness must not depend on a vendor being reachable.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import close_old_connections

from orchestrator.config import CallConfig, EngineSpec

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PreloadState:
    status: str = "idle"  # idle | loading | ready | failed
    started_at: float | None = None
    seconds: float | None = None
    error: str = ""
    models: list[str] = field(default_factory=list)  # what was warmed, for the logs


STATE = PreloadState()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def start_in_background(
    on_done: Callable[[], None] | None = None,
) -> threading.Thread | None:
    """Start the preload once per process (a daemon thread with its own event loop);
    ``on_done`` runs in that thread when it is over (loaded or failed)."""
    global _thread
    with _lock:
        if _thread is not None:
            return _thread
        STATE.status, STATE.started_at = "loading", time.monotonic()
        _thread = threading.Thread(
            target=_run, args=(on_done,), name="engine-preload", daemon=True
        )
        _thread.start()
        return _thread


def wait(timeout: float) -> bool:
    """Block until the preload is over (loaded or failed); False if still loading."""
    thread = _thread
    if thread is None:
        return True
    thread.join(timeout)
    return not thread.is_alive()


def readiness() -> tuple[bool, str]:
    """(ready, detail) for /health/ready/."""
    if STATE.status == "loading":
        elapsed = time.monotonic() - (STATE.started_at or time.monotonic())
        return False, f"loading local models ({elapsed:.0f} s so far)"
    if STATE.status == "failed":
        # Calls still work (models load on first use), only slower: say so, stay ready.
        return True, f"preload failed, models load on first use: {STATE.error}"
    if STATE.status == "ready":
        return True, f"{len(STATE.models)} local engine(s) warm in {STATE.seconds:.1f} s"
    return True, "preload disabled"


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now (Django, the models, the imported
    modules: ~150k+) out of the garbage collector's reach. A full collection walks them
    all: 40-75 ms measured here, a pause in every live call's audio (a late frame at the
    carrier) whenever the oldest generation's turn came during calls. What calls create
    afterwards is still collected as usual. Only before calls are taken: a live call's
    objects frozen with the rest would never be collected (voiceapp/asgi.py decides)."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    logger.info(
        "startup heap frozen: %d objects out of the collector's walks (%.0f ms)",
        gc.get_freeze_count(),
        (time.perf_counter() - started) * 1000,
    )


def _run(on_done: Callable[[], None] | None = None) -> None:
    try:
        _load()
    finally:
        if on_done is not None:
            on_done()


def _load() -> None:
    try:
        try:
            wanted = _local_engines_of_active_profiles()
            turn_model = _profiles_use_smart_turn()
        finally:
            close_old_connections()
        models = asyncio.run(_warm(wanted, turn_model=turn_model))
    except Exception as exc:  # noqa: BLE001 - a failed preload must not stop the server
        STATE.status, STATE.error = "failed", f"{type(exc).__name__}: {exc}"[:300]
        logger.exception("engine preload failed; models will load on first use")
        return
    STATE.models = models
    STATE.seconds = time.monotonic() - (STATE.started_at or time.monotonic())
    STATE.status = "ready"
    logger.info("engines preloaded in %.1f s: %s", STATE.seconds, ", ".join(models) or "none")


def _local_engines_of_active_profiles() -> list[tuple[str, EngineSpec, CallConfig]]:
    """(role, spec, config) of every distinct local engine an active profile may use on
    any channel (overlays may change the language or the engines)."""
    from calls import selectors
    from calls.models import AgentProfile, Channel

    seen: set[tuple[str, str, str, str]] = set()
    wanted: list[tuple[str, EngineSpec, CallConfig]] = []
    for profile in AgentProfile.objects.filter(is_active=True):
        for channel in Channel.values:
            config = selectors.call_config_for(profile=profile, channel=channel)
            for role in ("stt", "llm", "tts"):
                for spec in getattr(config, role):
                    key = (role, spec.model, spec.voice, config.language)
                    if spec.engine == "local" and key not in seen:
                        seen.add(key)
                        wanted.append((role, spec, config))
    return wanted


def _profiles_use_smart_turn() -> bool:
    from calls.models import AgentProfile

    return AgentProfile.objects.filter(is_active=True, turn_detection="smart").exists()


async def _warm(
    wanted: list[tuple[str, EngineSpec, CallConfig]], *, turn_model: bool = False
) -> list[str]:
    from calls.selectors import engine_credentials
    from orchestrator.engines import create_engine

    credentials = engine_credentials()
    warmed: list[str] = []
    for role, spec, config in wanted:
        engine = create_engine(role, spec, credentials, config=config)
        started = time.perf_counter()
        await engine.warmup()
        label = " ".join(f"{role} local {spec.model} {spec.voice} {config.language}".split())
        if model := getattr(engine, "model_label", ""):  # local STT: which model, by language
            label += f" ({model})"
        warmed.append(label)
        logger.info("warmed %s in %.1f s", label, time.perf_counter() - started)
    if turn_model and await _warm_turn_model():
        warmed.append("end-of-turn Smart Turn v3.2")
    return warmed


async def _warm_turn_model() -> bool:
    """Smart Turn (orchestrator/smart_turn.py), when a profile uses the smart end of turn:
    its first inference would otherwise land on the first caller's first pause."""
    from orchestrator import smart_turn

    if not smart_turn.available():
        return False
    started = time.perf_counter()
    await smart_turn.warmup()
    logger.info("warmed end-of-turn model in %.1f s", time.perf_counter() - started)
    return True
