"""Liveness and readiness endpoints.

``/health/`` answers without touching any dependency (for the container healthcheck);
``/health/ready/`` checks the database and, when configured, Redis and the channel layer.
"""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


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


@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict[str, object]] = {}
    runners = {"database": _check_database}
    if settings.REDIS_URL:
        runners["redis"] = _check_redis
        runners["channel_layer"] = async_to_sync(_channel_layer_roundtrip)
    healthy = True
    for name, check in runners.items():
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
