"""Sentence/clause cutting of a streamed LLM reply."""

from __future__ import annotations

import pytest

from orchestrator.sentences import SentenceSplitter


def split(text: str, step: int = 3) -> list[str]:
    splitter = SentenceSplitter()
    out: list[str] = []
    for i in range(0, len(text), step):
        out += splitter.push(text[i : i + step])
    if (tail := splitter.flush()) is not None:
        out.append(tail)
    return out


@pytest.mark.parametrize("step", [1, 3, 50])
def test_it_cuts_sentences_as_they_complete(step: int) -> None:
    assert split("I can help with that. What day would you like? Great!", step) == [
        "I can help with that.",
        "What day would you like?",
        "Great!",
    ]


def test_a_sentence_is_emitted_before_the_stream_ends() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("The table is booked for you. And") == ["The table is booked for you."]
    assert splitter.push(" the rest") == []


def test_spanish_inverted_marks() -> None:
    assert split("¿Cómo está usted hoy? ¡Qué bien que llame!¿Algo más?") == [
        "¿Cómo está usted hoy?",
        "¡Qué bien que llame!",
        "¿Algo más?",
    ]


def test_abbreviations_initials_and_decimals_do_not_cut() -> None:
    assert split(
        "El Dr. García y la Sra. Pérez cobran 3.5 euros, e.g. poco. Vale, J. K. Rowling llega."
    ) == [
        "El Dr. García y la Sra. Pérez cobran 3.5 euros, e.g. poco.",
        "Vale, J. K. Rowling llega.",
    ]
    # the tail of the stream is flushed even when short
    assert split("Mr. Smith arrives at 10 a.m. tomorrow. Fine?") == [
        "Mr. Smith arrives at 10 a.m. tomorrow.",
        "Fine?",
    ]


def test_tiny_fragments_are_joined_to_the_next_sentence() -> None:
    assert split("Sí. Claro, lo reservo ahora mismo.") == ["Sí. Claro, lo reservo ahora mismo."]


def test_long_sentences_are_cut_at_clauses() -> None:
    text = (
        "Let me check the total for you, which includes the main course and the dessert you chose, "
        "plus tax."
    )
    pieces = split(text)
    assert pieces[0].endswith("dessert you chose,")
    assert " ".join(pieces) == text


def test_ellipsis_and_closing_quotes_stay_with_the_sentence() -> None:
    assert split('Well... he said "maybe." Then he left the room.') == [
        'Well... he said "maybe."',
        "Then he left the room.",
    ]


def test_markdown_marks_are_dropped() -> None:
    assert split("**Sure**, here it is.") == ["Sure, here it is."]
