"""The profile webhook carries what the agent did: tool turns and where a call went."""

from __future__ import annotations

from django.utils import timezone

from calls import services, webhooks
from calls.models import Channel, EndReason


def test_the_webhook_payload_carries_tool_turns_and_the_transfer(db):
    call = services.call_start(profile=None, channel=Channel.TWILIO)
    now = timezone.now()
    services.turn_record(call_id=call.pk, role="user", text="A person, please.",
                         started_at=now, ended_at=now, sequence=1)  # fmt: skip
    services.turn_record(
        call_id=call.pk, role="tool", text='transfer_call({"destination": "Front desk"}) → ok',
        started_at=now, ended_at=now, sequence=2,
        tool={"name": "transfer_call", "arguments": {"destination": "Front desk"},
              "result": "Transferring the caller to Front desk.", "status": "ok",
              "latency_ms": 0.4},
    )  # fmt: skip
    services.call_end(call_id=call.pk, reason=EndReason.TRANSFERRED, transferred_to="+34910000000")
    call.refresh_from_db()

    payload = webhooks.payload_for(call)

    assert payload["call"]["end_reason"] == "transferred"
    assert payload["call"]["transferred_to"] == "+34910000000"
    user, tool = payload["transcript"]
    assert "tool" not in user
    assert tool["role"] == "tool"
    assert tool["tool"] == {
        "name": "transfer_call",
        "arguments": {"destination": "Front desk"},
        "status": "ok",
        "result": "Transferring the caller to Front desk.",
        "latency_ms": 0.4,
    }
