"""Per-instruction IFEval checks with hand-made responses, strict and loose.

Each case is (instruction id, kwargs, response, expected strict, expected loose). Loose-only
passes come from the reference's relaxations: dropping the first/last line or the ``*``s.
"""

from __future__ import annotations

import pytest

from prorl.verifiers.ifeval import INSTRUCTION_IDS, follow_loose, follow_strict, loose_variants

FR = ("Je suis très heureux de vous aider aujourd'hui avec votre question sur la cuisine "
      "française et les recettes traditionnelles de ma grand-mère.")
EN_UP = "THIS IS AN ENGLISH SENTENCE ABOUT THE WEATHER TODAY AND THE PLANS FOR TOMORROW."
EN_LOW = "this is an english sentence about the weather today and the plans for tomorrow."

CASES = [
    # keywords:existence
    ("keywords:existence", {"keywords": ["apple", "banana"]}, "I like Apple and BANANA.", True, True),
    ("keywords:existence", {"keywords": ["apple", "banana"]}, "I like apples only.", False, False),
    ("keywords:existence", {"keywords": ["apple", "banana"]}, "apple and ban*ana", False, True),
    # keywords:frequency
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "A cat, a Cat.", True, True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "One cat.", False, False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "One cat.", True, True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"},
     "The cat and the cat\nonly one cat here", False, True),
    # keywords:forbidden_words
    ("keywords:forbidden_words", {"forbidden_words": ["damn"]}, "Darn it, damnation.", True, True),
    ("keywords:forbidden_words", {"forbidden_words": ["damn"]}, "Well... DAMN it.", False, False),
    ("keywords:forbidden_words", {"forbidden_words": ["damn"]}, "Damn.\nThis part is fine.", False, True),
    # keywords:letter_frequency
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
     "Zz z", True, True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
     "zz top", False, False),
    ("keywords:letter_frequency", {"letter": "Z", "let_frequency": 3, "let_relation": "less than"},
     "zz top", True, True),
    # language:response_language
    ("language:response_language", {"language": "fr"}, FR, True, True),
    ("language:response_language", {"language": "fr"}, EN_LOW, False, False),
    ("language:response_language", {"language": "de"}, "12345 !!! ???", True, True),  # undetectable
    # length_constraints:number_sentences
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "One thing. Two things.", True, True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "One. Two! Three?", False, False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Intro line here.\nOne thing. Two things.", False, True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "Dr. Smith came. He saw. He left.", True, True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "Dr. Smith came. He left.", False, False),
    # length_constraints:number_paragraphs
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "a\n***\nb\n***\nc", True, True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "a\n***\nb", False, False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "a\n***\n***\nb\n***\nc", False, False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "Title\n***\na\n***\nb\n***\nc",
     False, True),
    # length_constraints:number_words
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "one two-three four", True, True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "one two three four five",
     False, False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two three four five",
     True, True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "Sure, here is my answer:\nshort reply", False, True),
    # length_constraints:nth_paragraph_first_word
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "banana"},
     "Apples are good.\n\nBanana, yes.", True, True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "banana"},
     "Apples are good.\n\n\"Banana\" is the word.", True, True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "banana"},
     "Apples.\n\nCherry.", False, False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "banana"},
     "Apples are red.\nReally.\n\nBanana.\nYes.\n\nCherry.\nNo.", False, False),  # 3 paragraphs
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "banana"},
     "Sure:\n\nApples.\n\nBanana rocks.", False, True),
    # detectable_content:number_placeholders
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True, True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name].", False, False),
    # detectable_content:postscript
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nP.S. bye", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi. PS bye", False, False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\np. p. s. later", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.S. later", False, False),
    # detectable_format:number_bullet_lists
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b", True, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro\n- a\n  - b", True, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n** b", False, False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b\n* c", False, True),
    # detectable_format:constrained_response
    ("detectable_format:constrained_response", {}, "My answer is yes.", True, True),
    ("detectable_format:constrained_response", {}, "Yes, it is.", False, False),
    ("detectable_format:constrained_response", {}, "My answer is *no*.", False, True),
    # detectable_format:number_highlighted_sections
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and **b**", True, True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and ** **", False, False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a\nb* only *c*", False, False),
    # detectable_format:multiple_sections
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nfoo\nSection 2\nbar", True, True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nfoo\nSection 2\nbar", False, False),
    # detectable_format:json_format
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True, True),
    ("detectable_format:json_format", {}, '{"a": 1} trailing words', False, False),
    ("detectable_format:json_format", {}, 'Here you go:\n{"a": 1}', False, True),
    # detectable_format:title
    ("detectable_format:title", {}, "<<My Poem>>\nRoses are red.", True, True),
    ("detectable_format:title", {}, "<<   >>\nRoses are red.", False, False),
    ("detectable_format:title", {}, "<<My\nPoem>>", False, False),
    # combination:two_responses
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True, True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False, False),
    ("combination:two_responses", {}, "A\n******\n******\nB", False, False),
    ("combination:two_responses", {}, "A\n******\nB\n******\nC", False, True),
    # combination:repeat_prompt
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "write a poem. Roses are red.", True, True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "A poem: roses.", False, False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Sure!\nWrite a poem. Roses.", False, True),
    # startend:end_checker
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Bye. Any other questions?", True, True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, '"Bye. any other questions?"', True, True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Thanks", False, False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Bye. Any other questions?\n-- Bob",
     False, True),
    # startend:quotation
    ("startend:quotation", {}, '  "hello there"\n', True, True),
    ("startend:quotation", {}, "hello there", False, False),
    ("startend:quotation", {}, '"', False, False),
    ("startend:quotation", {}, 'Here it is:\n"hello there"', False, True),
    # change_case:capital_word_frequency
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "THIS is VERY good", True, True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "This is good, NASA", False, False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "DON'T", True, True),  # split like Treebank: DO + N'T
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "This is good, NASA", True, True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "NOTE AND WARNING\nThis is good, NASA", False, True),
    # change_case:english_capital
    ("change_case:english_capital", {}, EN_UP, True, True),
    ("change_case:english_capital", {}, EN_LOW, False, False),
    ("change_case:english_capital", {}, FR.upper(), False, False),
    ("change_case:english_capital", {}, "Sure, here it is:\n" + EN_UP, False, True),
    # change_case:english_lowercase
    ("change_case:english_lowercase", {}, EN_LOW, True, True),
    ("change_case:english_lowercase", {}, EN_UP, False, False),
    ("change_case:english_lowercase", {}, FR.lower(), False, False),
    ("change_case:english_lowercase", {}, EN_LOW + "\nP.S. Bye", False, True),
    # punctuation:no_comma
    ("punctuation:no_comma", {}, "no commas here at all", True, True),
    ("punctuation:no_comma", {}, "one, two", False, False),
    ("punctuation:no_comma", {}, "Hi, there\nno commas here", False, True),
]


@pytest.mark.parametrize("iid,kwargs,response,strict,loose", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_instruction_case(iid, kwargs, response, strict, loose):
    assert follow_strict(response, [iid], [kwargs]) == [strict]
    assert follow_loose(response, [iid], [kwargs]) == [loose]


def test_every_instruction_type_has_pass_and_fail_cases():
    assert len(INSTRUCTION_IDS) == 25
    for iid in INSTRUCTION_IDS:
        outcomes = {c[3] for c in CASES if c[0] == iid}
        assert outcomes == {True, False}, iid


def test_loose_never_below_strict_and_blank_never_follows():
    for iid, kwargs, response, _, _ in CASES:
        s = follow_strict(response, [iid], [kwargs])[0]
        lo = follow_loose(response, [iid], [kwargs])[0]
        assert lo or not s, (iid, response)
    # Whitespace-only responses follow nothing, not even "no comma".
    assert follow_strict("  \n ", ["punctuation:no_comma"], [{}]) == [False]
    assert follow_loose("  \n ", ["punctuation:no_comma"], [{}]) == [False]


def test_loose_variants_are_the_reference_eight():
    v = loose_variants("first *a*\nmiddle\nlast")
    assert v == [
        "first *a*\nmiddle\nlast", "middle\nlast", "first *a*\nmiddle", "middle",
        "first a\nmiddle\nlast", "middle\nlast", "first a\nmiddle", "middle",
    ]


def test_multiple_instructions_are_judged_independently():
    ids = ["punctuation:no_comma", "keywords:existence", "startend:quotation"]
    kws = [{}, {"keywords": ["moon"]}, {}]
    assert follow_strict('"The moon, tonight"', ids, kws) == [False, True, True]
    assert follow_strict('"The sun tonight"', ids, kws) == [True, False, True]


def test_linear_time_helpers_equal_the_reference_regexes():
    """count_line_items / count_placeholders / find_titles / postscript replace regexes that are
    quadratic on long runs; on random strings they must give exactly the regex results."""
    import random
    import re

    from prorl.verifiers.ifeval.instructions import (
        content_postscript,
        count_line_items,
        count_placeholders,
        find_titles,
    )

    rng = random.Random(7)
    alphabet = ["*", "-", " ", "\n", "\t", "a", "[", "]", "<", ">", "p", ".", "s", "P"]
    for _ in range(3000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert count_line_items(t, "*") == len(re.findall(r"^\s*\*[^\*].*$", t, flags=re.MULTILINE)), t
        assert count_line_items(t, "-") == len(re.findall(r"^\s*-.*$", t, flags=re.MULTILINE)), t
        assert count_placeholders(t) == len(re.findall(r"\[.*?\]", t)), t
        assert find_titles(t) == re.findall(r"<<[^\n]+>>", t), t
        low = t.lower()
        assert content_postscript(t, postscript_marker="P.S.") == bool(
            re.findall(r"\s*p\.\s?s\..*$", low, flags=re.MULTILINE)), t
        assert content_postscript(t, postscript_marker="P.P.S") == bool(
            re.findall(r"\s*p\.\s?p\.\s?s.*$", low, flags=re.MULTILINE)), t


def test_pathological_long_responses_stay_fast():
    """Long runs that make the reference regexes quadratic (about a minute at this size)."""
    import time

    ids = list(INSTRUCTION_IDS)
    first_kwargs: dict = {}
    for iid, kwargs, *_ in CASES:
        first_kwargs.setdefault(iid, kwargs)
    kws = [first_kwargs[i] for i in ids]
    for text in ("[" * 60000, "\n" * 60000 + "x", " \n" * 30000 + "x", "<<" * 30000, "[[" * 30000 + "{"):
        t0 = time.perf_counter()
        follow_loose(text, ids, kws)
        assert time.perf_counter() - t0 < 10.0, repr(text[:10])
    assert follow_strict("[" * 5000, ["detectable_format:json_format"], [{}]) == [False]  # deep nesting
