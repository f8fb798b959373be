"""Global stop policy, shared by every process through Redis (or the cache without Redis).

Each critical call error is added to a sliding window. When the window holds
``GLOBAL_STOP_MAX_ERRORS_IN_WINDOW`` errors within ``GLOBAL_STOP_WINDOW_SECONDS``, new calls
are refused everywhere (simulator sockets close, carrier webhooks play the apology and hang
up) until an operator resets it. Active calls continue. One notification is POSTed to
``ADMIN_NOTIFICATION_WEBHOOK_URL`` per stop, from a background thread so no call waits on it.

While Redis is unreachable the policy fails open, with one warning line per check: calls
are allowed (a Redis blip must not refuse every caller) and errors are logged but not
counted. An operator's reset still fails loudly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from calls import services

logger = logging.getLogger(__name__)


def _key(name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:global_stop:{name}"


# What an unreachable Redis raises through redis-py (and Django's Redis cache).
UNREACHABLE = (RedisError, OSError)


@dataclass(slots=True, kw_only=True)
class StopState:
    stopped: bool
    since: float | None
    reason: str
    recent_errors: list[dict[str, Any]]
    unavailable: str = ""  # why the state could not be read (then: not stopped, no errors)


def _redis():  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _window() -> int:
    return max(1, settings.GLOBAL_STOP_WINDOW_SECONDS)


def _record_error(entry: dict[str, Any]) -> int:
    """Add an error to the window; return how many errors the window now holds."""
    now = time.time()
    member = json.dumps({**entry, "at": now, "id": uuid.uuid4().hex})
    if settings.REDIS_URL:
        client = _redis()
        try:
            pipe = client.pipeline()
            pipe.zadd(_key("errors"), {member: now})
            pipe.zremrangebyscore(_key("errors"), 0, now - _window())
            pipe.zcard(_key("errors"))
            pipe.expire(_key("errors"), _window() * 2)
            return int(pipe.execute()[2])
        finally:
            client.close()
    # Cache fallback (single process in development): read-modify-write is good enough.
    errors = [e for e in cache.get(_key("errors"), []) if json.loads(e)["at"] > now - _window()]
    errors.append(member)
    cache.set(_key("errors"), errors, _window() * 2)
    return len(errors)


def _recent_errors() -> list[dict[str, Any]]:
    now = time.time()
    if settings.REDIS_URL:
        client = _redis()
        try:
            raw = client.zrangebyscore(_key("errors"), now - _window(), "+inf")
        finally:
            client.close()
    else:
        raw = cache.get(_key("errors"), [])
    entries = [json.loads(r) for r in raw]
    return [e for e in entries if e["at"] > now - _window()]


def _set_stopped(info: dict[str, Any]) -> bool:
    """Set the stop flag; True only for the process that set it first (it notifies)."""
    value = json.dumps(info)
    if settings.REDIS_URL:
        client = _redis()
        try:
            return bool(client.set(_key("stopped"), value, nx=True))
        finally:
            client.close()
    return bool(cache.add(_key("stopped"), value, timeout=None))


def _get_stopped() -> dict[str, Any] | None:
    if settings.REDIS_URL:
        client = _redis()
        try:
            raw = client.get(_key("stopped"))
        finally:
            client.close()
    else:
        raw = cache.get(_key("stopped"))
    return json.loads(raw) if raw else None


def calls_allowed() -> bool:
    try:
        return _get_stopped() is None
    except UNREACHABLE as exc:
        logger.warning("global stop state unreadable (%r); allowing calls", exc)
        return True


def state() -> StopState:
    try:
        stopped = _get_stopped()
        recent = _recent_errors()
    except UNREACHABLE as exc:
        logger.warning("global stop state unreadable (%r)", exc)
        return StopState(
            stopped=False, since=None, reason="", recent_errors=[], unavailable=repr(exc)
        )
    return StopState(
        stopped=stopped is not None,
        since=(stopped or {}).get("at"),
        reason=(stopped or {}).get("reason", ""),
        recent_errors=recent,
    )


def report_critical_error(*, reason: str, call_id: str = "", channel: str = "") -> bool:
    """Count a critical error; returns True when this error triggered the global stop."""
    logger.error("critical_call_error: %s", reason, extra={"call_id": call_id, "channel": channel})
    info: dict[str, Any] = {}
    try:
        count = _record_error({"reason": reason[:300], "call_id": call_id, "channel": channel})
        if count < settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW:
            return False
        info = {"at": time.time(), "reason": reason[:300], "errors_in_window": count}
        if not _set_stopped(info):
            return False
    except UNREACHABLE as exc:
        logger.warning("global stop state unreachable (%r); this error was not counted", exc)
        return False
    logger.critical(
        "global_call_stop_activated: %d errors in %ds; new calls are refused until reset",
        count,
        _window(),
    )
    services.global_stop_event_record(action="stop", actor="policy", detail=info)
    _notify_admin_in_background({"event": "global_call_stop_activated", **info})
    return True


def reset(*, actor: str) -> bool:
    """Allow calls again; returns False if calls were not stopped."""
    if settings.REDIS_URL:
        client = _redis()
        try:
            pipe = client.pipeline()
            pipe.delete(_key("stopped"))
            pipe.delete(_key("errors"))
            was_stopped = bool(pipe.execute()[0])
        finally:
            client.close()
    else:
        was_stopped = cache.get(_key("stopped")) is not None
        cache.delete_many([_key("stopped"), _key("errors")])
    services.global_stop_event_record(
        action="reset", actor=actor, detail={"was_stopped": was_stopped}
    )
    logger.warning("global stop reset by %s (was stopped: %s)", actor, was_stopped)
    return was_stopped


def _notify_admin_in_background(payload: dict[str, Any]) -> threading.Thread | None:
    url = settings.ADMIN_NOTIFICATION_WEBHOOK_URL
    if not url:
        logger.warning("no ADMIN_NOTIFICATION_WEBHOOK_URL set; global stop notified in logs only")
        return None
    thread = threading.Thread(target=_post_with_retries, args=(url, payload), daemon=True)
    thread.start()
    return thread


def _post_with_retries(url: str, payload: dict[str, Any], attempts: int = 3) -> bool:
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, json=payload, timeout=5.0)
            if response.status_code < 300:
                logger.info("admin notification delivered")
                return True
            logger.warning(
                "admin notification got HTTP %s (attempt %d)", response.status_code, attempt
            )
        except httpx.HTTPError as exc:
            logger.warning("admin notification failed (attempt %d): %s", attempt, exc)
        time.sleep(0.5 * 2**attempt)
    logger.error("admin notification not delivered after %d attempts", attempts)
    return False
