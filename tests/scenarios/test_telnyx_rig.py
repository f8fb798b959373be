"""The runner's Telnyx Call Control API, spoken to as the server's REST client speaks to it
(``telephony/telnyx/rest.py``'s requests): what it records and how it answers."""

from __future__ import annotations

import httpx

from scenarios.telnyx_api import TelnyxRig


async def command(
    rig: TelnyxRig, call: str, action: str, body: dict, key: str = ""
) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{rig.api_url}/calls/{call}/actions/{action}",
            json=body,
            headers={"Authorization": f"Bearer {key or rig.api_key}"},
        )


async def test_an_answer_hands_the_stream_url_over_and_a_late_hangup_is_already_ended():
    rig = TelnyxRig()
    await rig.start()
    try:
        answered = rig.expect("v3:call-1")
        stream = {"stream_url": "wss://agent.example.com/ws/telephony/telnyx/s/"}

        answering = await command(rig, "v3:call-1", "answer", {**stream, "client_state": "e30="})
        hanging_up = await command(rig, "v3:call-1", "hangup", {})
        rig.ended("v3:call-1")  # call.hangup went out
        late = await command(rig, "v3:call-1", "hangup", {})

        assert answering.status_code == hanging_up.status_code == 200
        answer = answered.result()
        assert answer.stream_url == stream["stream_url"] and answer.client_state == "e30="
        assert rig.commands("v3:call-1") == ["answer", "hangup"]
        assert late.status_code == 422 and "90018" in late.text
    finally:
        await rig.close()


async def test_a_refused_call_and_a_foreign_api_key_are_said_so():
    rig = TelnyxRig()
    await rig.start()
    try:
        rejected, foreign, plain = (rig.expect(f"v3:{n}") for n in ("busy", "key", "plain"))

        await command(rig, "v3:busy", "reject", {"cause": "USER_BUSY"})
        denied = await command(rig, "v3:key", "answer", {"stream_url": "wss://x/"}, key="KEYother")
        await command(rig, "v3:plain", "answer", {"client_state": "e30="})

        assert rejected.result().refusal == "rejected (USER_BUSY)"
        assert denied.status_code == 401 and "another TELNYX_API_KEY" in foreign.result().refusal
        assert plain.result().refusal.startswith("answered without a media stream")
    finally:
        await rig.close()
