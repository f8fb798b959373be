"""Stream tokens and the global stop when Redis cannot be reached: logged, and safe.

Redis is pointed at a closed local port (never the shared Redis, which stays up). The
process-level version, a Redis killed under live calls, is in test_socket_faults.py.
"""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from calls import global_stop
from telephony import tokens
from tests.server_process import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead_redis():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    with override_settings(REDIS_URL=url, CACHES=caches):
        yield url


async def test_a_valid_stream_token_is_accepted_with_a_warning_when_its_store_is_down(
    dead_redis, caplog
):
    token = tokens.mint(call_id="0b7c6f36-2f7e-4b8e-9a53-6c1f5d3e2a10", carrier="twilio")
    with caplog.at_level(logging.WARNING, logger="telephony.tokens"):
        grant = await tokens.consume(token, carrier="twilio")
    assert grant.call_id == "0b7c6f36-2f7e-4b8e-9a53-6c1f5d3e2a10"
    assert "stream token store unreachable" in caplog.text


@pytest.mark.parametrize("problem", ["forged", "other carrier", "expired"])
async def test_a_bad_stream_token_is_still_refused_when_its_store_is_down(dead_redis, problem):
    call_id = "0b7c6f36-2f7e-4b8e-9a53-6c1f5d3e2a10"
    token = tokens.mint(call_id=call_id, carrier="twilio", ttl_s=-1 if problem == "expired" else 60)
    if problem == "forged":
        token = token[:-4] + "beef"
    carrier = "telnyx" if problem == "other carrier" else "twilio"
    with pytest.raises(tokens.InvalidToken):
        await tokens.consume(token, carrier=carrier)


def test_calls_are_allowed_with_one_warning_line_when_the_stop_state_is_unreadable(
    dead_redis, caplog
):
    with caplog.at_level(logging.WARNING, logger="calls.global_stop"):
        assert global_stop.calls_allowed() is True
    (record,) = [r for r in caplog.records if r.name == "calls.global_stop"]
    assert "allowing calls" in record.getMessage() and record.exc_info is None


def test_the_stop_state_reads_as_unavailable_not_as_an_error_when_redis_is_down(dead_redis):
    state = global_stop.state()
    assert not state.stopped and state.recent_errors == []
    assert "Connection" in state.unavailable


def test_a_critical_error_is_logged_not_raised_when_redis_is_down(dead_redis, caplog):
    with caplog.at_level(logging.WARNING, logger="calls.global_stop"):
        assert global_stop.report_critical_error(reason="stt: boom", call_id="c1") is False
    assert "not counted" in caplog.text
