"""The offline replacements for nltk / langdetect used by the IFEval checkers."""

from __future__ import annotations

import pytest

from prorl.verifiers.ifeval.text_utils import (
    LanguageDetectionError,
    count_sentences,
    count_words,
    detect_language,
    split_sentences,
    word_tokenize,
)


def test_count_words_is_word_character_runs():
    assert count_words("Don't stop-me now, 3.5 times!") == 8  # Don t stop me now 3 5 times
    assert count_words("") == 0
    assert count_words("naïve café — déjà vu") == 4


@pytest.mark.parametrize("text,expected", [
    ("Hello world. This is it.", ["Hello world.", "This is it."]),
    ("Why?! Because.", ["Why?!", "Because."]),
    ("Mr. Smith met Dr. Jones in the U.S. today.", ["Mr. Smith met Dr. Jones in the U.S. today."]),
    ("Fruits, e.g. apples, are good. Yes.", ["Fruits, e.g. apples, are good.", "Yes."]),
    ('He said "Hi." Then he left.', ['He said "Hi."', "Then he left."]),
    ("It costs 3.5 dollars. Cheap.", ["It costs 3.5 dollars.", "Cheap."]),
    ("Wait... What? ok... fine", ["Wait...", "What?", "ok... fine"]),
    ("John F. Kennedy spoke. J. K. Rowling wrote.", ["John F. Kennedy spoke.", "J. K. Rowling wrote."]),
    ("Title line\n\n- bullet one\n- bullet two", ["Title line\n\n- bullet one\n- bullet two"]),
    ("Tips:\n1. Eat well.\n2. sleep more", ["Tips:\n1.", "Eat well.", "2. sleep more"]),
    ("(Done.) Next one.", ["(Done.)", "Next one."]),
    ("example.com is a site. OK", ["example.com is a site.", "OK"]),
    ("", []),
    ("   \n ", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected
    assert count_sentences(text) == len(expected)


def test_newlines_alone_do_not_split_sentences():
    assert count_sentences("line one\nline two\nline three") == 1
    assert count_sentences("line one.\nline two.\nline three.") == 3


@pytest.mark.parametrize("text,tokens", [
    ("DON'T do THAT, I'm SURE.", ["DO", "N'T", "do", "THAT", ",", "I", "'m", "SURE", "."]),
    ("COVID-19 cannot stop R&D", ["COVID-19", "can", "not", "stop", "R", "&", "D"]),
    ("(AI) is **BIG**", ["(", "AI", ")", "is", "*", "*", "BIG", "*", "*"]),
])
def test_word_tokenize(text, tokens):
    assert word_tokenize(text) == tokens


def test_detect_language_is_deterministic_and_raises_on_no_features():
    pytest.importorskip("langdetect")
    fr = "Bonjour à tous, je voudrais réserver une table pour deux personnes ce soir."
    assert {detect_language(fr) for _ in range(5)} == {"fr"}
    assert detect_language("The quick brown fox jumps over the lazy dog near the river bank.") == "en"
    with pytest.raises(LanguageDetectionError):
        detect_language("12345 !!! ???")
