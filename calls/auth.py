"""API-key authentication for the operator API (``Authorization: Bearer <ADMIN_API_KEY>``)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


def bearer_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_api_key(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """401 without a bearer token, 403 with a wrong one, 503 when no key is configured."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        expected = settings.ADMIN_API_KEY
        if not expected:
            return JsonResponse({"error": "ADMIN_API_KEY is not configured"}, status=503)
        token = bearer_token(request)
        if token is None:
            response = JsonResponse({"error": "missing bearer token"}, status=401)
            response["WWW-Authenticate"] = "Bearer"
            return response
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return JsonResponse({"error": "invalid API key"}, status=403)
        return view(request, *args, **kwargs)

    return wrapper
