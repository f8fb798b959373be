"""A whole Twilio call in which the agent acts: the caller asks for a booking, the LLM (the
real Groq SDK against the local fake vendor) calls the profile's HTTP tool (a local
endpoint that checks the signature), and the agent's next sentence uses the result; then
the caller says goodbye and the agent hangs up through the (fake) Twilio REST API.

Real: the signed voice webhook, the media socket, µ-law, VAD, turn-taking, the session,
the tool loop, the recorder and the database. Fake (network edge only): the vendor API,
the customer's tool endpoint, Twilio's REST API."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from calls.models import AgentProfile, CallStatus, EndReason, ProfileTool
from tests.fake_vendor import Reply
from tests.speech import have_speech_tools
from tests.telephony.conftest import twilio_signature
from tests.telephony.test_streams import Twilio, is_mark, load_call, socket, until
from tests.tools.fake_tool_server import SECRET, serving

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("calls_allowed"),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

ASKED = "I'd like to book a table for four people on Friday."
BOOKING = {
    "type": "object",
    "properties": {"party_size": {"type": "integer"}, "day": {"type": "string"}},
    "required": ["party_size", "day"],
}


def llm_answers(request) -> Reply:
    """The fake LLM: books on the first request, then reads the tool result back."""
    messages = request.json["messages"]
    results = [m for m in messages if m["role"] == "tool"]
    if not results:
        return Reply.tool_call_stream(
            [("book_table", {"party_size": 4, "day": "Friday"})], text=["Let me check."]
        )
    echoed = json.loads(results[-1]["content"])
    if messages[-1]["role"] == "user" and "bye" in messages[-1]["content"].lower():
        return Reply.tool_call_stream([("end_call", {})], text=["Goodbye, see you Friday!"])
    if messages[-1]["role"] != "tool":
        return Reply.chat_stream(["Anything else?"])
    booked = echoed["received"]
    signed = "signed" if echoed["signature_valid"] else "UNSIGNED"
    return Reply.chat_stream(
        [f"Done: table for {booked['party_size']} on {booked['day']}", f", {signed}."]
    )


@pytest.fixture
def vendor(groq_vendor):
    return groq_vendor


def booking_profile(tool_url: str) -> AgentProfile:
    profile = AgentProfile.objects.create(
        name="Casa Lola",
        slug="casa-lola",
        language="en-US",
        greeting="Hello, Casa Lola.",
        phone_numbers="+34910000001",
        stt_engine="groq",
        llm_engine="groq",
        tts_engine="scripted",
        tts_model="ttfb_ms=20;ms_per_char=15",
        turn_detection="silence",
        silence_timeout_ms=500,
        idle_timeout_s=30,
        tool_filler="One moment.",
        goodbye_message="Goodbye.",
    )
    ProfileTool.objects.create(
        profile=profile, name="book_table", description="Book a table.", parameters=BOOKING,
        url=tool_url, secret=SECRET,
    )  # fmt: skip
    return profile


async def test_a_twilio_caller_books_through_an_http_tool_and_the_agent_hangs_up(
    vendor, fake_carrier
):
    import tests.scripted  # noqa: F401 - registers the scripted TTS engine

    vendor.responder["chat"] = llm_answers
    vendor.script("transcriptions", Reply.transcription(ASKED), Reply.transcription("Bye!"))
    with serving() as endpoint:
        await database_sync_to_async(booking_profile)(endpoint.url("/echo"))
        call_sid, parameters = await Twilio.ring()
        signature = twilio_signature("wss://agent.example.com/ws/telephony/twilio/", {})
        async with socket(Twilio.PATH, headers=[(b"x-twilio-signature", signature.encode())]) as ws:
            twilio = Twilio(ws, call_sid)
            await twilio.start(parameters)
            await until(ws, is_mark("utt-1"))
            await twilio.echo_mark("utt-1")

            await twilio.say("I would like to book a table for four people on Friday.")
            await until(ws, is_mark("utt-2"))
            await twilio.echo_mark("utt-2")

            await twilio.say("Thank you, bye.")
            closed = await until(ws, lambda m: False)
            # The agent's hang-up: the goodbye's mark, then the socket closes normally.
            assert closed[-1]["event"] == "_close" and closed[-1]["code"] == 1000

        (request,) = endpoint.requests
        assert request.signature_valid
        assert request.json()["arguments"] == {"party_size": 4, "day": "Friday"}

    call, turns = await load_call(parameters["call_id"])
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.AGENT_HANGUP)
    roles = [t.role for t in turns]
    assert roles == ["assistant", "user", "tool", "assistant", "user", "tool", "assistant"]
    assert turns[1].text == ASKED
    tool = turns[2]
    assert (tool.tool_name, tool.tool_status) == ("book_table", "ok")
    assert tool.tool_arguments == {"party_size": 4, "day": "Friday"}
    assert tool.tool_latency_ms is not None and tool.tool_latency_ms >= 0
    assert turns[3].text == "Let me check. Done: table for 4 on Friday, signed."
    assert turns[5].tool_name == "end_call"
    assert turns[6].text == "Goodbye, see you Friday!"
    assert call.metrics["tool_calls"] == 2
    # The LLM was offered the profile's tool and the built-in hang-up.
    first = vendor.calls("chat")[0].json
    assert {t["function"]["name"] for t in first["tools"]} == {"book_table", "end_call"}
    # Hung up at the carrier through the REST API (Twilio: status=completed).
    (hangup,) = fake_carrier.of("twilio.update")
    assert hangup.params["sid"] == call_sid and hangup.body == {"Status": "completed"}
