"""Liveness and readiness endpoints.

``/health/`` answers without touching any dependency (for the container healthcheck);
``/health/ready/`` runs the named checks of :func:`readiness_checks` (the database, when
configured Redis and the channel layer, the start-up preload of the local models, and
whether this process still takes calls: live/admission.py) and answers 503 naming the ones
that failed.
Each check bounds its own wait: the database's is ``DB_REQUEST_TIMEOUT_SECONDS``, so a hung
PostgreSQL makes readiness fail in about that long instead of hanging the probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from calls.db_deadline import run_with_deadline

logger = logging.getLogger(__name__)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_database() -> None:
    run_with_deadline(_select_one, what="readiness database check")


def _check_redis() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


async def _channel_layer_roundtrip() -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    async with asyncio.timeout(3):
        name = await layer.new_channel("health.")
        await layer.send(name, {"type": "health.ping"})
        message = await layer.receive(name)
    if message.get("type") != "health.ping":
        raise RuntimeError("channel layer returned an unexpected message")


class EnginesLoading(Exception):
    """The start-up preload of the local models has not finished."""


def _check_engines() -> None:
    from calls import preload

    ready, detail = preload.readiness()
    if not ready:
        raise EnginesLoading(detail)


class ProcessFull(Exception):
    """This process refuses new calls (live/admission.py): capacity or event-loop lag."""


def _check_capacity() -> None:
    from live import admission

    refused = admission.controller.host_refusal()
    if refused is not None:
        raise ProcessFull(str(refused))


def readiness_checks() -> dict[str, Callable[[], None]]:
    """Named checks: each returns when its dependency works and raises (its reason) when not."""
    # capacity first: it costs nothing and a full process must leave rotation at once.
    checks: dict[str, Callable[[], None]] = {
        "capacity": _check_capacity,
        "database": _check_database,
    }
    if settings.REDIS_URL:
        checks["redis"] = _check_redis
        checks["channel_layer"] = async_to_sync(_channel_layer_roundtrip)
    if settings.PRELOAD_ENGINES:
        # A process still loading its models would give its first callers 5-20 s of
        # silence: keep the load balancer's calls away until they are warm.
        checks["engines"] = _check_engines
    return checks


@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict[str, object]] = {}
    healthy = True
    for name, check in readiness_checks().items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure makes the check fail, with its reason
            healthy = False
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
            logger.warning("readiness check %s failed: %s", name, exc)
        else:
            checks[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
