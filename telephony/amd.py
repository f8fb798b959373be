"""Answering-machine detection (AMD) on outbound calls: what a carrier's verdict means, and
how it reaches the call's session.

Each carrier's webhook translates its own events into one vocabulary, Twilio's
``AnsweredBy`` values (the most precise of the two), and stores it on ``Call.answered_by``
through ``services.call_set_answered_by``:

=======================  ==========================================  =====================
stored                   Twilio ``AnsweredBy``                       Telnyx event (result)
=======================  ==========================================  =====================
``human``                ``human``                                   detection (``human``)
``machine_start``        ``machine_start`` (``Enable`` only)         detection (``machine``)
``machine_end_beep``     ``machine_end_beep``                        greeting (``beep_detected``)
``machine_end_silence``  ``machine_end_silence``                     greeting (``ended``)
``machine_end_other``    ``machine_end_other``                       greeting (``not_sure``)
``fax``                  ``fax``                                     —
``unknown``              ``unknown``                                 detection (``not_sure``)
=======================  ==========================================  =====================

The session takes ``human``, ``machine`` or ``unknown`` (:func:`verdict`). A machine is
reported only once its greeting is over when the profile leaves a message (the session
speaks it at once, so it must not talk over the greeting); to hang up, the first sign of a
machine is enough.

**Delivery across processes.** The webhook may reach a different server process than the
one holding the call's media socket. So the stored verdict is the source of truth: the
media socket's consumer polls it (``selectors.call_answered_by``, every
``ANSWER_POLL_S``) while its session waits for one, from the session's start (a verdict
that came before the stream is delivered at once) until a verdict was delivered, the call
ended or ``answer_wait_s`` passed (the session has gone ahead on its own by then). When
the call is live in the webhook's own process, :func:`deliver` also hands the verdict over
at once. The channel layer (Redis) is not used: media sockets never subscribe to it, so a
Redis outage cannot cost a verdict.
"""

from __future__ import annotations

import logging

from calls.models import VoicemailAction
from live.runtime import deliver_answer

logger = logging.getLogger(__name__)

HUMAN, MACHINE, UNKNOWN = "human", "machine", "unknown"  # what the session takes
MACHINE_START = "machine_start"  # a machine; its greeting may still be playing
# A machine whose greeting is over: the verdict a later retry of the detection must not undo.
GREETING_OVER = ("machine_end_beep", "machine_end_silence", "machine_end_other")
_VERDICTS = {
    "human": HUMAN,
    "unknown": UNKNOWN,
    "fax": MACHINE,  # no person will answer: the profile's machine action applies
    **dict.fromkeys(GREETING_OVER, MACHINE),
}
ANSWER_POLL_S = 0.5  # how often a waiting call reads the stored verdict


def verdict(stored: str, *, action: str) -> str | None:
    """What the session is told for a stored verdict; None while there is nothing to tell
    (no verdict yet, or a machine still playing its greeting when a message is to be left)."""
    if stored == MACHINE_START:
        return None if action == VoicemailAction.LEAVE_MESSAGE else MACHINE
    return _VERDICTS.get(stored)


def deliver(call_id: object, stored: str, *, action: str) -> bool:
    """Hand a stored verdict to the call's session if it is live in this process (callable
    from any thread: webhooks run in Django's sync threads). True if it was handed over;
    otherwise the session's own poll finds it in the database."""
    told = verdict(stored, action=action)
    if told is None:
        return False
    delivered = deliver_answer(str(call_id), told)
    logger.info(
        "call %s answered by %s (%s)%s",
        call_id,
        stored,
        told,
        "" if delivered else ": not live in this process, its socket's poll delivers it",
    )
    return delivered
