"""Carrier serializers and stream tokens: wire messages in, wire messages out."""

from __future__ import annotations

import base64
import json
import time

import pytest

from orchestrator.audio import pcm16_to_ulaw, ulaw_to_pcm16
from telephony import tokens, wire
from telephony.telnyx import wire as telnyx
from telephony.telnyx.wire import ChunkReorderer, TelnyxStream
from telephony.twilio import wire as twilio
from telephony.twilio.wire import TwilioStream

ULAW = bytes(range(160))
B64 = base64.b64encode(ULAW).decode()
PCM = ulaw_to_pcm16(ULAW)  # what the serializers hand the consumer: PCM16 8 kHz


def twilio_start(**start):
    body = {
        "streamSid": "MZ1",
        "callSid": "CA1",
        "customParameters": {"call_id": "c", "token": "t"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        **start,
    }
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": body})


def test_twilio_messages_become_session_inputs():
    stream = TwilioStream()
    assert stream.parse('{"event":"connected","protocol":"Call","version":"1.0.0"}') == [
        wire.Connected()
    ]
    (start,) = stream.parse(twilio_start())
    assert start == wire.Start(
        stream_id="MZ1", carrier_call_id="CA1", custom_parameters={"call_id": "c", "token": "t"}
    )
    assert TwilioStream.token(start, {}) == "t"
    media = {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"track": "inbound", "chunk": "1", "payload": B64},
    }
    assert stream.parse(json.dumps(media)) == [wire.Media(pcm16=PCM)]
    assert stream.parse('{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"#"}}') == [
        wire.Dtmf(digit="#")
    ]
    assert stream.parse('{"event":"mark","mark":{"name":"utt-3"}}') == [wire.Mark(name="utt-3")]
    assert stream.parse('{"event":"stop","stop":{}}') == [wire.Stop()]
    assert isinstance(stream.parse('{"event":"dance"}')[0], wire.Ignored)


def test_session_output_becomes_twilio_messages_with_the_stream_sid():
    stream = TwilioStream()
    stream.parse(twilio_start())
    assert json.loads(stream.media(PCM)) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(pcm16_to_ulaw(PCM)).decode()},
    }
    assert json.loads(stream.mark("utt-1")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "utt-1"},
    }
    assert json.loads(stream.clear()) == {"event": "clear", "streamSid": "MZ1"}


@pytest.mark.parametrize(
    "text",
    [
        None,
        "{not json",
        "[1]",
        '{"event":"media"}',
        '{"event":"media","media":{"payload":"@@@"}}',
        '{"event":"media","media":{"payload":""}}',
        '{"event":"mark","mark":{}}',
        '{"event":"dtmf","dtmf":{"digit":"x"}}',
        "x" * 70_000,
        json.dumps(
            {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 20_000).decode()}}
        ),
    ],
)
def test_broken_twilio_messages_raise_protocol_errors_that_are_not_fatal(text):
    with pytest.raises(wire.ProtocolError) as error:
        TwilioStream().parse(text)
    assert not error.value.fatal


@pytest.mark.parametrize(
    "start", [{"mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000}}, {"callSid": None}]
)
def test_a_twilio_start_we_cannot_serve_is_fatal(start):
    with pytest.raises(wire.ProtocolError) as error:
        TwilioStream().parse(twilio_start(**start))
    assert error.value.fatal


def test_twiml_connects_a_parameterised_stream_and_the_apology_hangs_up():
    xml = twilio.connect_twiml(
        stream_url="wss://a.example/ws/telephony/twilio/", call_id="c1", token="t.k"
    )
    assert '<Connect><Stream url="wss://a.example/ws/telephony/twilio/">' in xml
    assert '<Parameter name="call_id" value="c1" /><Parameter name="token" value="t.k" />' in xml
    assert twilio.apology_twiml(text="Sorry", language="es-ES").endswith(
        '<Say language="es-ES">Sorry</Say><Hangup /></Response>'
    )


def test_telnyx_messages_become_session_inputs_and_outputs_need_no_stream_id():
    stream = TelnyxStream()
    start = {
        "event": "start",
        "stream_id": "S1",
        "start": {
            "call_control_id": "v3:1",
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
    }
    assert stream.parse(json.dumps(start)) == [wire.Start(stream_id="S1", carrier_call_id="v3:1")]
    assert TelnyxStream.token(stream.parse(json.dumps(start))[0], {"secret": "abc"}) == "abc"
    outbound = {"event": "media", "media": {"track": "outbound", "chunk": "1", "payload": B64}}
    assert isinstance(stream.parse(json.dumps(outbound))[0], wire.Ignored)
    assert stream.parse('{"event":"dtmf","dtmf":{"digit":"1"}}') == [wire.Dtmf(digit="1")]
    error = (
        '{"event":"error","payload":{"code":100004,"title":"invalid_media","detail":"not base64"}}'
    )
    assert stream.parse(error) == [
        wire.CarrierError(code="100004", detail="invalid_media: not base64")
    ]
    assert json.loads(stream.media(PCM)) == {
        "event": "media",
        "media": {"payload": base64.b64encode(pcm16_to_ulaw(PCM)).decode()},
    }
    assert json.loads(stream.clear()) == {"event": "clear"}
    assert json.loads(stream.mark("utt-1")) == {"event": "mark", "mark": {"name": "utt-1"}}


def test_telnyx_accepts_both_mulaw_names_and_refuses_other_codecs():
    def start(encoding: str) -> str:
        return json.dumps(
            {
                "event": "start",
                "stream_id": "S",
                "start": {
                    "call_control_id": "v3:1",
                    "media_format": {"encoding": encoding, "sample_rate": 8000},
                },
            }
        )

    for encoding in ("PCMU", "audio/x-mulaw"):
        assert isinstance(TelnyxStream().parse(start(encoding))[0], wire.Start)
    with pytest.raises(wire.ProtocolError) as error:
        TelnyxStream().parse(start("OPUS"))
    assert error.value.fatal


def test_telnyx_media_is_put_back_in_chunk_order():
    stream = TelnyxStream()

    def media(chunk: int) -> list[wire.Inbound]:
        payload = base64.b64encode(bytes([chunk]) * 160).decode()
        return stream.parse(
            json.dumps(
                {
                    "event": "media",
                    "media": {"track": "inbound", "chunk": str(chunk), "payload": payload},
                }
            )
        )

    got = [pcm16_to_ulaw(m.pcm16)[0] for chunk in (1, 3, 2, 4, 6, 5, 5, 2) for m in media(chunk)]
    assert got == [1, 2, 3, 4, 5, 6]  # late duplicates dropped


def test_the_reorder_buffer_gives_up_on_a_lost_chunk_after_a_few_frames():
    buffer = ChunkReorderer(depth=3)
    out = [p for chunk in (1, 3, 4, 5, 6, 7) for p in buffer.push(chunk, bytes([chunk]))]
    assert out == [b"\x01", b"\x03", b"\x04", b"\x05", b"\x06", b"\x07"]
    assert buffer.push(2, b"\x02") == []  # too late: its place has been played


def test_telnyx_signatures_cover_timestamp_and_body_and_expire(settings):
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    settings.TELNYX_PUBLIC_KEY = base64.b64encode(bytes(key.verify_key)).decode()
    body, ts = b'{"data":{}}', str(int(time.time()))
    signature = base64.b64encode(key.sign(ts.encode() + b"|" + body).signature).decode()
    assert telnyx.signature_problem(body, signature, ts) is None
    assert telnyx.signature_problem(body + b" ", signature, ts) is not None
    assert telnyx.signature_problem(body, signature, str(int(ts) + 1)) is not None
    assert (
        telnyx.signature_problem(body, signature, ts, now=int(ts) + 301) == "stale telnyx-timestamp"
    )
    assert telnyx.signature_problem(body, "not base64!", ts) is not None
    settings.TELNYX_PUBLIC_KEY = ""
    assert telnyx.signature_problem(body, signature, ts) == "TELNYX_PUBLIC_KEY is not set"


# --- tokens -------------------------------------------------------------------------------------


CALL_ID = "7d2e8a4c-1b3f-4c5d-9e6f-0a1b2c3d4e5f"


async def test_a_stream_token_is_valid_once():
    token = tokens.mint(call_id=CALL_ID, carrier="twilio")
    assert (await tokens.consume(token, carrier="twilio")).call_id == CALL_ID
    with pytest.raises(tokens.InvalidToken, match="already used"):
        await tokens.consume(token, carrier="twilio")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace(CALL_ID, "00000000-0000-0000-0000-000000000000"),
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),
        lambda t: "",
        lambda t: "a.b.c",
        lambda t: t + ".extra",
    ],
)
def test_tampered_stream_tokens_are_refused(mutate):
    with pytest.raises(tokens.InvalidToken):
        tokens.peek(mutate(tokens.mint(call_id=CALL_ID, carrier="twilio")), carrier="twilio")


def test_stream_tokens_expire_and_belong_to_one_carrier():
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.peek(tokens.mint(call_id=CALL_ID, carrier="twilio", ttl_s=-1), carrier="twilio")
    with pytest.raises(tokens.InvalidToken, match="signature"):
        tokens.peek(tokens.mint(call_id=CALL_ID, carrier="twilio"), carrier="telnyx")
