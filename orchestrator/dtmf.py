"""Keypad digits of one call: collected until the next turn, which carries them to the
LLM as a note; digits pressed with no speech become a turn of their own after a pause."""

from __future__ import annotations


class DtmfDigits:
    TURN_DELAY_S = 1.5  # digits with no speech become a turn after this pause

    def __init__(self) -> None:
        self._digits: list[str] = []
        self.deadline: float | None = None  # when the digits alone make a turn

    @property
    def pending(self) -> bool:
        return bool(self._digits)

    def press(self, digit: str, *, now: float) -> None:
        self._digits.append(digit)
        self.deadline = now + self.TURN_DELAY_S

    def due(self, now: float) -> bool:
        """True once, when the pause after the last digit is over."""
        if self.deadline is None or now < self.deadline:
            return False
        self.deadline = None
        return True

    def take_note(self) -> str:
        """The digits as a note for the LLM (consumed); empty without digits."""
        if not self._digits:
            return ""
        note = f"[DTMF: {' '.join(self._digits)}]"
        self._digits.clear()
        self.deadline = None
        return note
