"""The helpers that keep transcript assertions machine-independent."""

from __future__ import annotations

import pytest

from tests.transcripts import assert_heard, word_error_rate, words


def test_words_ignore_case_and_punctuation_and_keep_accents():
    assert words("¿Qué tal? Una CITA, para el lunes.") == [
        "qué",
        "tal",
        "una",
        "cita",
        "para",
        "el",
        "lunes",
    ]


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        ("Quiero pedir una cita para el lunes.", 0),
        ("Quiero venir una cita para el rume", 2 / 7),  # two substitutions
        ("Quiero una cita para el lunes", 1 / 7),  # a deletion
        ("Quiero pedir pedir una cita para el lunes", 1 / 7),  # an insertion
        ("", 1.0),
    ],
)
def test_word_error_rate_counts_substitutions_deletions_and_insertions(heard, expected):
    assert word_error_rate("Quiero pedir una cita para el lunes", heard) == pytest.approx(expected)


def test_an_english_model_on_spanish_audio_fails_the_spanish_check():
    with pytest.raises(AssertionError):
        assert_heard(
            "I'm going to go to the next one.",
            "Quiero pedir una cita para el lunes",
            max_wer=0.45,
            at_least=3,
            of=frozenset({"quiero", "una", "para", "el"}),
        )
