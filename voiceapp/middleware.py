"""Health probes are answered whatever the Host header says.

Docker's healthcheck curls ``127.0.0.1:8000``, Kubernetes probes the pod IP, a load
balancer uses its own address: none of them is in ``ALLOWED_HOSTS``, and adding them
would not do (pod IPs change; a wildcard switches host validation off for every page).
Django validates the host at the first ``request.get_host()`` (``CommonMiddleware``, the
CSRF check, the SSL redirect) and answers 400, so the container was never healthy with
``ALLOWED_HOSTS=voice.example.com``.

``HealthProbeMiddleware`` comes first in ``MIDDLEWARE`` and serves only the probe paths,
with the views ``voiceapp/urls.py`` routes them to, before any host check. Those views
never read the host (no links, no redirects, no cookies), so skipping the check for them
cannot be used to poison anything; every other path is validated as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from asgiref.sync import (
    async_to_sync,
    iscoroutinefunction,
    markcoroutinefunction,
    sync_to_async,
)
from django.http import HttpRequest, HttpResponse
from django.urls import resolve

PROBE_PATHS = frozenset({"/health/", "/health/ready/"})


class HealthProbeMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        if request.path_info not in PROBE_PATHS:
            return self.get_response(request)
        view = _route(request)
        return async_to_sync(view)(request) if iscoroutinefunction(view) else view(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if request.path_info not in PROBE_PATHS:
            return await self.get_response(request)
        view = _route(request)
        if iscoroutinefunction(view):
            return await view(request)
        return await sync_to_async(view)(request)


def _route(request: HttpRequest) -> Callable[..., Any]:
    """The probe's view from the URLconf, with its captured arguments bound."""
    match = resolve(request.path_info)
    request.resolver_match = match
    return functools.partial(match.func, *match.args, **match.kwargs)
