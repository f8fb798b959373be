"""Deterministic booking facts from the caller's own words: party size, day, time, name.

The offline extraction's small local LLM writes well-formed JSON but often the wrong
number or hour (it copies its few-shot example, or turns "eight in the evening" into
"10:00"). These rules catch only explicit phrasings ("a table for four", "at eight in
the evening", "8 pm", "a las ocho de la tarde", "my name is John Smith", "me llamo Ana")
and, where they match, win over the model (calls/extraction.py labels each field's
source); the offline flow guide (flows/guide.py) pins a transition's values to them. A
short answer to the agent's question ("Four." after "How many people?") is read by what
the question asked (:func:`answer_facts`). Anything subtler ("the same as last time",
"make it five instead of four" said in another order) is beyond them.

English and Spanish only. Pure functions on text: no Django.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

_NUMBERS = {
    # en
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
    # es
    "uno": 1, "una": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6,
    "siete": 7, "ocho": 8, "nueve": 9, "diez": 10, "once": 11, "doce": 12, "trece": 13,
    "catorce": 14, "quince": 15, "dieciseis": 16, "diecisiete": 17, "dieciocho": 18,
    "diecinueve": 19, "veinte": 20,
}  # fmt: skip
_N = r"(\d{1,2}|" + "|".join(sorted(_NUMBERS, key=len, reverse=True)) + r")"
_WORD_END = r"(?![\w'])"

_PARTY = [
    re.compile(p, re.I)
    for p in (
        rf"\b(?:table|booking|reservation|mesa|reserva)\s+(?:for|para)\s+{_N}{_WORD_END}",
        rf"\b(?:for|para)\s+{_N}\s+(?:people|persons|guests|adults|of us|personas|comensales)\b",
        rf"\bparty of\s+{_N}{_WORD_END}",
        rf"\b(?:we(?:'re| are| will be|'ll be)|somos|seremos|seriamos)\s+{_N}{_WORD_END}",
        rf"\b{_N}\s+(?:people|persons|guests|of us|personas|comensales)\b",
    )
]

_DAYS = (
    "today|tonight|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    "hoy|lunes|martes|miercoles|jueves|viernes|sabado|domingo"
)
# "mañana" is "tomorrow" except in "de la mañana" ("in the morning").
_DAY = re.compile(rf"\b({_DAYS})\b|(?<!la )\b(manana)\b", re.I)

_LATER = (
    r"(?P<later>in the (?:evening|afternoon|morning)|at night|tonight|p\.?\s?m\b\.?"
    r"|a\.?\s?m\b\.?|de la (?:tarde|noche|manana))"
)
_MINUTES = r"(?::(?P<mm>\d{2})|\s+(?P<half>thirty|y media|y cuarto|fifteen|forty[- ]five))?"
_TIMES = [
    # "8 pm", "8:30 p.m.", "eight in the evening", "las ocho de la tarde"
    re.compile(rf"\b(?P<h>{_N[1:-1]}){_MINUTES}\s*(?:o'?clock\s*)?{_LATER}", re.I),
    # "at eight", "at 8:30", "a las ocho", "a la una y media", "20:00"
    re.compile(
        rf"\b(?:at|a las|a la|sobre las|para las)\s+(?P<h>{_N[1:-1]}){_MINUTES}{_WORD_END}", re.I
    ),
    re.compile(r"\b(?P<h>[01]?\d|2[0-3]):(?P<mm>[0-5]\d)\b"),
]

_NAME_WORD = r"[A-ZÁÉÍÓÚÑ][\w'-]+"
_NAMES = [
    re.compile(
        rf"\b(?i:my name is|my name's|name is|under the name(?: of)?|it's under|this is|"
        rf"i am|i'm|me llamo|mi nombre es|a nombre de|soy)\s+"
        rf"(?P<name>{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})"
    ),
    # Lower-case transcripts: only after the unambiguous "my name is" / "me llamo".
    re.compile(
        r"\b(?:my name is|me llamo|mi nombre es)\s+(?P<name>[a-záéíóúñ'-]+(?:\s+[a-záéíóúñ'-]+)?)",
        re.I,
    ),
]
_NOT_NAMES = {
    "and", "y", "please", "por", "favor", "thanks", "thank", "gracias", "calling", "llamando",
    "here", "aqui", "sorry", "just", "not", "no", "from", "de", "the", "el", "la", "a", "an",
    "i", "going", "looking", "trying", "interested", "very", "fine", "good", "bien",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class BookingFacts:
    party_size: int | None = None
    time: str | None = None  # "Friday 20:00", "20:00", "tomorrow 8:00" (hour as said)
    name: str | None = None
    day: str | None = None  # the last day word, as said ("Friday", "mañana")


def _fold(text: str) -> str:
    """Lower-case without accents (miércoles -> miercoles), same length as ``text``."""
    return "".join(
        unicodedata.normalize("NFD", ch)[0] if ch.isalpha() else ch for ch in text.lower()
    )


def _number(word: str) -> int | None:
    word = _fold(word)
    return int(word) if word.isdigit() else _NUMBERS.get(word)


def party_size(text: str) -> int | None:
    """The last explicit party size in ``text`` (a later correction wins), 1-30."""
    folded = _fold(text)
    found: list[tuple[int, int]] = []
    for pattern in _PARTY:
        for match in pattern.finditer(folded):
            number = _number(match.group(1))
            if number is not None and 1 <= number <= 30:
                found.append((match.start(), number))
    return max(found)[1] if found else None


def _clock(match: re.Match[str]) -> str | None:
    hour = _number(match.group("h"))
    if hour is None or hour > 23:
        return None
    groups = match.groupdict()
    minutes = int(groups.get("mm") or 0)
    half = groups.get("half") or ""
    minutes = {"thirty": 30, "y media": 30, "y cuarto": 15, "fifteen": 15}.get(half, minutes)
    if half.startswith("forty"):
        minutes = 45
    later = groups.get("later") or ""
    afternoon = later.startswith("p") or any(
        word in later for word in ("evening", "afternoon", "night", "tarde", "noche")
    )
    if afternoon and 1 <= hour <= 11:
        hour += 12
    elif later and not afternoon and hour == 12:  # 12 am / doce de la mañana
        hour = 0
    return f"{hour}:{minutes:02d}"


def booking_time(text: str, *, with_day: bool = True) -> str | None:
    """The last explicit clock time in ``text``: 24 h when am/pm/evening says which half
    of the day ("8 pm" -> "20:00"), else as said ("at eight" -> "8:00"); prefixed with the
    last day word as the caller said it ("Friday 20:00", "viernes 20:30") unless
    ``with_day`` is false (a schema with a field of its own for the day)."""
    folded = _fold(text)
    matches = [
        (rank, match) for rank, pattern in enumerate(_TIMES) for match in pattern.finditer(folded)
    ]
    # Where two readings overlap ("at eight in the evening" is also "at eight"), the more
    # specific pattern (listed first) wins.
    kept = [
        (match.start(), clock)
        for rank, match in matches
        if (clock := _clock(match))
        and not any(
            other_rank < rank and other.start() < match.end() and match.start() < other.end()
            for other_rank, other in matches
        )
    ]
    if not kept:
        return None
    day = booking_day(text) if with_day else None
    return f"{day or ''} {max(kept)[1]}".strip()


def booking_day(text: str) -> str | None:
    """The last day word in ``text`` as the caller said it ("Friday", "mañana")."""
    days = [m.group(0) for m in _DAY.finditer(_fold(text))]
    return _day_as_said(text, days[-1]) if days else None


def _day_as_said(text: str, folded_day: str) -> str:
    """The day word with the caller's own spelling (accents, capitals)."""
    start = _fold(text).rfind(folded_day)
    return text[start : start + len(folded_day)] if start >= 0 else folded_day


def customer_name(text: str) -> str | None:
    """The last name the caller gave ("my name is John Smith", "me llamo Ana")."""
    for pattern in _NAMES:  # capitalised names first; the lower-case reading as a fallback
        found: list[tuple[int, str]] = []
        for match in pattern.finditer(text):
            words = []
            for word in match.group("name").split():
                if _fold(word) in _NOT_NAMES:
                    break
                words.append(word[:1].upper() + word[1:])
            if words:
                found.append((match.start(), " ".join(words)))
        if found:
            return max(found)[1]
    return None


def booking_facts(caller_text: str) -> BookingFacts:
    return BookingFacts(
        party_size=party_size(caller_text),
        time=booking_time(caller_text),
        name=customer_name(caller_text),
        day=booking_day(caller_text),
    )


# What the agent's question asks for, by its words (en, es): a short answer is read so.
_ASKS = (
    ("party_size", re.compile(r"how many|people|guests|party|personas|cuant[oa]s|comensales")),
    ("name", re.compile(r"\bname\b|nombre|\bllama|who is|a quien")),
    ("time", re.compile(r"what time|which time|\btime\b|\bhora\b|a que hora")),
    ("day", re.compile(r"which day|what day|\bday\b|\bdate\b|\bwhen\b|que dia|\bdia\b|cuando")),
)
SHORT_ANSWER_WORDS = 5
_CONFIRMING = re.compile(
    r"\b(?:is that (?:right|correct|ok|okay)|(?:shall|should|can) i (?:book|confirm)|"
    r"is it correct|"
    r"es correcto|esta bien|lo confirmo|le parece bien)\b"
)
_FILLER = {
    "it's", "its", "it", "is", "that's", "thats", "for", "at", "on", "the", "just", "um", "uh",
    "oh", "well", "es", "para", "somos", "el", "pues", "a", "las", "la", "of", "us",
}  # fmt: skip


def answer_facts(question: str, answer: str) -> dict[str, Any]:
    """Facts of a short ``answer`` (≤ 5 words) read by what ``question`` asked: "Four." to
    "How many people?" is a party of four, "Lola." to "What name…?" is the name, "Nine."
    to "What time?" is 9:00. A question asking several things is read in its own order,
    the first that fits wins. Empty when nothing fits."""
    words = [w for w in re.findall(r"[\w'-]+", answer) if _fold(w) not in _FILLER]
    if not words or len(answer.split()) > SHORT_ANSWER_WORDS:
        return {}
    folded_question = _fold(question)
    if _CONFIRMING.search(folded_question):
        # A read-back ("… under the name Lola. Is that right?") asks yes or no: "Wrong
        # day." is not a name. A correction said in full is read by the explicit rules.
        return {}
    asked = sorted(
        (match.start(), kind)
        for kind, pattern in _ASKS
        if (match := pattern.search(folded_question))
    )
    numbers = [n for w in words if (n := _number(w)) is not None]
    for _, kind in asked:
        if fact := _short_answer(kind, answer, words, numbers):
            return fact
    return {}


def _short_answer(kind: str, answer: str, words: list[str], numbers: list[int]) -> dict[str, Any]:
    folded = {_fold(w) for w in words}
    if kind == "party_size" and len(numbers) == 1 and 1 <= numbers[0] <= 30:
        return {"party_size": numbers[0]}
    if kind == "time":
        if clock := booking_time(answer, with_day=False) or spoken_clock(answer):
            return {"time": clock}
        # A bare hour ("Nine."), nothing that would move it ("half past", "y media").
        if len(numbers) == 1 and numbers[0] <= 23 and not folded & _CLOCK_WORDS:
            return {"time": f"{numbers[0]}:00"}
        return {}
    if kind == "day" and (day := booking_day(answer)):
        return {"day": day}
    if (
        kind == "name"
        and not numbers
        and len(words) <= 3
        and not booking_day(answer)
        and not folded & _NOT_AN_ANSWER
    ):
        if name := customer_name(answer):
            return {"name": name}
        kept = [w for w in words if _fold(w) not in _NOT_NAMES]
        if kept and len(kept) == len(words):
            return {"name": " ".join(w[:1].upper() + w[1:] for w in kept)}
    return {}


# Words that move a spoken hour, and the clock phrasings answer_facts reads beyond the
# explicit ones of booking_time ("half past seven", "seven thirty", "las ocho y media").
_CLOCK_WORDS = {
    "half", "quarter", "past", "to", "thirty", "fifteen", "forty", "five", "media", "cuarto",
    "menos", "twenty", "ten",
}  # fmt: skip
_HOUR = _N[1:-1]
_SPOKEN_CLOCKS = [
    (re.compile(rf"\bhalf past (?P<h>{_HOUR}){_WORD_END}"), 30, 0),
    (re.compile(rf"\bquarter past (?P<h>{_HOUR}){_WORD_END}"), 15, 0),
    (re.compile(rf"\bquarter to (?P<h>{_HOUR}){_WORD_END}"), 45, -1),
    (re.compile(rf"\b(?P<h>{_HOUR}) (?:thirty){_WORD_END}"), 30, 0),
    (re.compile(rf"\b(?P<h>{_HOUR}) (?:fifteen){_WORD_END}"), 15, 0),
    (re.compile(rf"\b(?P<h>{_HOUR}) forty[- ]five{_WORD_END}"), 45, 0),
    (re.compile(rf"\b(?P<h>{_HOUR}) y media{_WORD_END}"), 30, 0),
    (re.compile(rf"\b(?P<h>{_HOUR}) y cuarto{_WORD_END}"), 15, 0),
    (re.compile(rf"\b(?P<h>{_HOUR}) menos cuarto{_WORD_END}"), 45, -1),
]
# A short answer with one of these is no name ("Sure.", "Pardon?", "Sí, claro.").
_NOT_AN_ANSWER = {
    "yes", "yeah", "yep", "no", "nope", "sure", "ok", "okay", "sorry", "pardon", "what",
    "hello", "hi", "wrong", "incorrect", "right", "correct", "course", "thanks", "thank",
    "si", "claro", "vale", "hola", "perdon", "que", "como", "gracias", "correcto", "mal",
}  # fmt: skip


def spoken_clock(text: str) -> str | None:
    """"half past seven" -> "7:30", "seven thirty" -> "7:30", "las ocho y media" -> "8:30",
    "quarter to eight" -> "7:45" (the hour as said: no half of the day is implied)."""
    folded = _fold(text)
    for pattern, minutes, shift in _SPOKEN_CLOCKS:
        if (match := pattern.search(folded)) and (hour := _number(match.group("h"))) is not None:
            hour = (hour + shift) % 24 if hour <= 23 else None
            if hour is not None:
                return f"{hour}:{minutes:02d}"
    return None


# Which profile field each fact fills, by the field's name and JSON type.
_FIELD_KINDS = (
    ("day", re.compile(r"^(?:day|dia|weekday|booking_day|dia_reserva)$", re.I), "string"),
    ("party_size", re.compile(r"party|people|guests|persons|personas|comensales|pax", re.I),
     "integer"),
    ("time", re.compile(r"time|hora|when|date|fecha|slot", re.I), "string"),
    ("name", re.compile(r"name|nombre", re.I), "string"),
)  # fmt: skip


def field_kind(name: str, prop: dict[str, Any]) -> str | None:
    """Which fact fills the schema field ``name``: "party_size", "day", "time", "name" or
    None."""
    declared = prop.get("type")
    types = set(declared) if isinstance(declared, list) else {declared}
    for kind, pattern, json_type in _FIELD_KINDS:
        if pattern.search(name) and (
            json_type in types or (json_type == "integer" and "number" in types)
        ):
            return kind
    return None


def fact_for_field(facts: BookingFacts, name: str, prop: dict[str, Any]) -> Any:
    """The fact that fills the schema field ``name`` (``None`` when no rule applies)."""
    kind = field_kind(name, prop)
    return getattr(facts, kind) if kind else None


def grounded(kind: str, value: Any, transcript: str) -> bool:
    """Whether the model's ``value`` for a fact of ``kind`` is said anywhere in
    ``transcript``: its number (digits or word), the hour of its time, every word of its
    name. A value the call never mentions was copied from the prompt's example or made up.
    """
    folded = _fold(transcript)
    if kind == "name":
        words = _fold(str(value)).split()
        return bool(words) and all(re.search(rf"\b{re.escape(w)}\b", folded) for w in words)
    if kind == "day":
        day = _fold(str(value)).strip()
        return bool(day) and re.search(rf"\b{re.escape(day)}\b", folded) is not None
    if kind == "party_size":
        numbers = [value] if isinstance(value, int) else []
    else:
        hour = re.search(r"\d{1,2}", str(value))
        numbers = [int(hour.group()), int(hour.group()) % 12] if hour else []
    said = {_number(w) for w in re.findall(r"\b\w+\b", folded)}
    return any(n in said for n in numbers if n)
