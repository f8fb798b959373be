"""What a call says when it is answered: the opening line, and the voicemail action.

Outbound calls with answering-machine detection stay silent until a verdict
(``CallSession.answered_by``): a person hears the opening line, a machine gets the profile's
voicemail action.
"""

from __future__ import annotations

from orchestrator.config import CallConfig

ANSWER_VERDICTS = ("human", "machine", "unknown")


def opening_line(config: CallConfig, *, recorded: bool) -> str:
    """The greeting; a recorded call says the profile's consent line first."""
    consent = config.recording_consent_line if recorded else ""
    return " ".join(text for text in (consent, config.greeting) if text)


def voicemail_line(config: CallConfig) -> str | None:
    """What to leave on an answering machine (None: hang up without a word)."""
    return config.voicemail_message if config.voicemail_action == "leave_message" else None
