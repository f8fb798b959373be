"""Per-call stream tokens: the gate of the carrier media sockets.

The signed webhook (Twilio ``voice``, Telnyx ``call.initiated``) mints a token for the
call record it created; the carrier hands it back when it opens the media socket (Twilio
as a ``<Parameter>`` in ``start.customParameters``, Telnyx in the stream URL path). A
token is an HMAC over ``carrier|call_id|expiry|nonce``, so it is checked without storage;
single use is enforced through the cache (Redis in production, so it holds across
processes): the first socket that presents a token consumes its nonce.

When that cache is unreachable (a Redis outage) a validly signed, unexpired token is
accepted with a warning: single use is a second lock, not the only one. The consumer
accepts a stream only for a call whose record is still ``ringing`` (and of the same
carrier call), and the first stream makes it ``active``, so a replayed token is refused
by the database check. Refusing instead would leave every new call of the outage
unanswered.

Format: ``<call uuid>.<expiry unix s>.<nonce>.<hex hmac>`` (URL and path safe).
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils.crypto import constant_time_compare, salted_hmac
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_SALT = "telephony.stream-token"
_USED_KEY = "telephony:stream-token:used:{nonce}"


class InvalidToken(Exception):
    """The token is missing, forged, expired, for another carrier, or already used."""


@dataclass(slots=True, kw_only=True, frozen=True)
class StreamGrant:
    call_id: str
    carrier: str


def _mac(carrier: str, call_id: str, expires: int, nonce: str) -> str:
    return salted_hmac(
        _SALT, f"{carrier}|{call_id}|{expires}|{nonce}", algorithm="sha256"
    ).hexdigest()


def mint(*, call_id: object, carrier: str, ttl_s: int | None = None) -> str:
    ttl = settings.STREAM_TOKEN_TTL_SECONDS if ttl_s is None else ttl_s
    expires = int(time.time()) + ttl
    nonce = secrets.token_urlsafe(18)
    return f"{call_id}.{expires}.{nonce}.{_mac(carrier, str(call_id), expires, nonce)}"


def peek(token: str, *, carrier: str) -> StreamGrant:
    """Check signature and expiry without consuming (raises :class:`InvalidToken`)."""
    if not isinstance(token, str) or len(token) > 300:
        raise InvalidToken("no token")
    parts = token.split(".")
    if len(parts) != 4:
        raise InvalidToken("malformed token")
    call_id, expires_s, nonce, mac = parts
    try:
        uuid.UUID(call_id)
        expires = int(expires_s)
    except ValueError:
        raise InvalidToken("malformed token") from None
    # Compare before looking at the expiry so a forged token learns nothing from timing.
    if not constant_time_compare(mac, _mac(carrier, call_id, expires, nonce)):
        raise InvalidToken("bad token signature")
    if expires < time.time():
        raise InvalidToken("token expired")
    return StreamGrant(call_id=call_id, carrier=carrier)


async def consume(token: str, *, carrier: str) -> StreamGrant:
    """Validate and consume ``token``; a second use raises :class:`InvalidToken`."""
    grant = peek(token, carrier=carrier)
    _, expires, nonce, _ = token.split(".")
    # Kept a little past the expiry so a replay cannot outlive the "used" mark.
    ttl = max(1, int(expires) - int(time.time())) + 60
    try:
        fresh = await cache.aadd(_USED_KEY.format(nonce=nonce), 1, timeout=ttl)
    except RedisError as exc:
        logger.warning(
            "stream token store unreachable (%r): accepting the signed, unexpired token of "
            "call %s; the ringing-status check still refuses a replay",
            exc,
            grant.call_id,
        )
        return grant
    if not fresh:
        raise InvalidToken("token already used")
    return grant
