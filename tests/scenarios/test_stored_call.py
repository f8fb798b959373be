"""The runner judges a call only once the server has written all of its ending."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from calls.models import Call, CallStatus, Channel, EndReason
from scenarios.caller_line import CallRef
from scenarios.stored_call import wait_until_finished


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_status_saved_before_its_end_reason_is_waited_for(profile):
    # The race once seen: the status is ended, the busy reason and detail not yet written.
    call = await database_sync_to_async(Call.objects.create)(
        profile=profile, channel=Channel.TWILIO, external_id="CAwait16",
        started_at=timezone.now(), status=CallStatus.ENDED,
    )  # fmt: skip

    async def finish_later() -> None:
        await asyncio.sleep(0.6)
        await database_sync_to_async(
            Call.objects.filter(pk=call.pk).update
        )(end_reason=EndReason.BUSY, error_detail="too many calls", ended_at=timezone.now())

    writer = asyncio.create_task(finish_later())
    ref = CallRef(channel="twilio", external_id="CAwait16")
    stored = await wait_until_finished(ref, extraction=False, timeout_s=10)
    await writer
    assert stored is not None
    assert stored.end_reason == EndReason.BUSY
    assert stored.error_detail == "too many calls"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_busy_ending_waits_a_moment_for_its_detail(profile):
    # The ending first (its reason), the session's detail in a second write.
    call = await database_sync_to_async(Call.objects.create)(
        profile=profile, channel=Channel.TWILIO, external_id="CAdetail16",
        started_at=timezone.now(), ended_at=timezone.now(), status=CallStatus.ENDED,
        end_reason=EndReason.BUSY,
    )  # fmt: skip

    async def detail_later() -> None:
        await asyncio.sleep(0.6)
        await database_sync_to_async(
            Call.objects.filter(pk=call.pk, error_detail="").update
        )(error_detail="refused, process busy")

    writer = asyncio.create_task(detail_later())
    ref = CallRef(channel="twilio", external_id="CAdetail16")
    stored = await wait_until_finished(ref, extraction=False, timeout_s=10)
    await writer
    assert stored is not None and stored.error_detail == "refused, process busy"
