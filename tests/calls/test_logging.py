import json
import logging

from calls.logging import CallContextFilter, JsonFormatter, bind_call, call_context


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("orchestrator.session", logging.INFO, __file__, 1, message, None, None)


def test_json_logs_carry_the_call_context_on_every_line():
    token = call_context.set(None)
    try:
        bind_call(call_id="c-1", channel="twilio", profile="demo")
        record = _record("barge-in")
        CallContextFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        call_context.reset(token)
    assert line["message"] == "barge-in"
    assert (line["call_id"], line["channel"], line["profile"]) == ("c-1", "twilio", "demo")


def test_lines_outside_a_call_have_no_call_fields():
    token = call_context.set(None)
    try:
        record = _record("started")
        CallContextFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        call_context.reset(token)
    assert "call_id" not in line and record.call_tag == ""
