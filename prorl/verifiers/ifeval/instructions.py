"""The 25 IFEval instruction checkers, one plain function each.

Each checker takes the response and the instruction's kwargs (as in IFEval's
``input_data.jsonl``) and returns whether the response follows the instruction. The semantics
follow the reference implementation (google-research ``instruction_following_eval``),
including its quirks: keywords are used as regular expressions, ``less than`` is strict and
``at least`` is inclusive, and a language that cannot be detected counts as followed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence

from prorl.verifiers.ifeval import text_utils

RELATIONS = ("less than", "at least")
CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _compare(actual: int, threshold: int, relation: str) -> bool:
    """``actual < threshold`` for "less than", ``actual >= threshold`` for "at least"."""
    if relation == "less than":
        return actual < threshold
    if relation == "at least":
        return actual >= threshold
    raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


def _search(pattern: str, text: str, around: str = "") -> bool:
    """Case-insensitive search for ``around + pattern + around``; ``pattern`` is a regex as in
    the reference, and is matched literally where it is not a valid regex."""
    try:
        rx = re.compile(around + pattern + around, flags=re.IGNORECASE)
    except re.error:
        rx = re.compile(around + re.escape(pattern) + around, flags=re.IGNORECASE)
    return rx.search(text) is not None


# -- keywords ---------------------------------------------------------------------------------


def keywords_existence(response: str, *, keywords: Sequence[str]) -> bool:
    """Every keyword occurs (case-insensitive substring/regex match)."""
    return all(_search(k, response) for k in keywords)


def keywords_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    """The keyword occurs ``relation`` ``frequency`` times (case-insensitive, overlaps not counted)."""
    keyword = keyword.strip()
    try:
        n = len(re.findall(keyword, response, flags=re.IGNORECASE))
    except re.error:
        n = len(re.findall(re.escape(keyword), response, flags=re.IGNORECASE))
    return _compare(n, int(frequency), relation)


def keywords_forbidden_words(response: str, *, forbidden_words: Sequence[str]) -> bool:
    """None of the words occurs as a whole word (case-insensitive)."""
    return not any(_search(w, response, around=r"\b") for w in set(forbidden_words))


def keywords_letter_frequency(response: str, *, letter: str, let_frequency: int,
                              let_relation: str) -> bool:
    """The letter (case-insensitive) occurs ``let_relation`` ``let_frequency`` times."""
    letter = letter.strip().lower()
    if len(letter) != 1:
        raise ValueError(f"letter must be a single character, got {letter!r}")
    return _compare(Counter(response.lower())[letter], int(let_frequency), let_relation)


# -- language ---------------------------------------------------------------------------------


def language_response_language(response: str, *, language: str) -> bool:
    """langdetect says the response is in ``language`` (undetectable text passes)."""
    try:
        return text_utils.detect_language(response) == language
    except text_utils.LanguageDetectionError:
        return True


# -- length constraints -----------------------------------------------------------------------


def length_number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    """Sentence count (punkt-like splitter) compared with ``num_sentences``."""
    return _compare(text_utils.count_sentences(response), int(num_sentences), relation)


def length_number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """Exactly ``num_paragraphs`` non-empty paragraphs separated by ``***`` dividers."""
    parts = re.split(r"\s?\*\*\*\s?", response)
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                count -= 1
            else:
                return False  # an empty paragraph between two dividers
    return count == int(num_paragraphs)


def length_number_words(response: str, *, num_words: int, relation: str) -> bool:
    """Word count (``\\w+`` runs) compared with ``num_words``."""
    return _compare(text_utils.count_words(response), int(num_words), relation)


def length_nth_paragraph_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int,
                                    first_word: str) -> bool:
    """Exactly ``num_paragraphs`` paragraphs (split on a blank line) and paragraph
    ``nth_paragraph`` (1-based) starts with ``first_word`` (case and trailing punctuation
    ignored)."""
    parts = re.split(r"\n\n", response)
    count = sum(1 for p in parts if p.strip())
    nth = int(nth_paragraph)
    if nth > count or nth < 1:
        return False
    paragraph = parts[nth - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    head = re.match(r"[^.,?!'\"]*", word).group(0).lower()
    return count == int(num_paragraphs) and head == first_word.lower()


# -- detectable content -----------------------------------------------------------------------


def content_number_placeholders(response: str, *, num_placeholders: int) -> bool:
    """At least ``num_placeholders`` ``[...]`` placeholders."""
    return count_placeholders(response) >= int(num_placeholders)


def count_placeholders(text: str) -> int:
    """Number of non-overlapping ``\\[.*?\\]`` matches, found in linear time (the regex itself
    is quadratic on long runs of unclosed ``[``)."""
    count, pos = 0, 0
    while (i := text.find("[", pos)) >= 0:
        line_end = text.find("\n", i)
        line_end = len(text) if line_end < 0 else line_end
        k = text.find("]", i + 1, line_end)
        if k < 0:
            pos = line_end + 1  # no "]" before the line ends: no "[" on this line can match
        else:
            count += 1
            pos = k + 1
    return count


def content_postscript(response: str, *, postscript_marker: str) -> bool:
    """A line (case-insensitive) starts with the postscript marker (``P.S.``, ``P.P.S`` ...)."""
    # The reference searches r"\s*<marker>.*$" (multiline); the optional leading space and the
    # always-matching tail do not change whether there is a match, so only the marker is searched
    # (which avoids quadratic time on long whitespace runs).
    marker = postscript_marker.strip()
    text = response.lower()
    if marker == "P.P.S":
        pattern = r"p\.\s?p\.\s?s"
    elif marker == "P.S.":
        pattern = r"p\.\s?s\."
    else:
        pattern = marker.lower()
    return re.search(pattern, text, flags=re.MULTILINE) is not None


# -- detectable format ------------------------------------------------------------------------


def format_number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    """Exactly ``num_bullets`` markdown bullet lines (``* item`` or ``- item``)."""
    return count_line_items(response, "*") + count_line_items(response, "-") == int(num_bullets)


_NON_SPACE = re.compile(r"\S")


def count_line_items(text: str, mark: str) -> int:
    """Number of matches of the reference's bullet regexes, ``^\\s*\\*[^\\*].*$`` (``mark="*"``)
    or ``^\\s*-.*$`` (``mark="-"``) with MULTILINE, computed in linear time.

    As in the regex, ``\\s*`` may run over blank lines, and ``[^*]`` may be a newline (then the
    item swallows the next line). A line start fails iff the first non-space character after
    it is not the mark, so a failed start lets us skip to the line after that character.
    """
    count, pos, n = 0, 0, len(text)
    while pos <= n:
        m = _NON_SPACE.search(text, pos)
        if m is None:
            break
        j = m.start()
        if text[j] == mark and (mark != "*" or (j + 1 < n and text[j + 1] != "*")):
            count += 1
            body = j + 2 if mark == "*" else j + 1
            end = text.find("\n", body)
        else:
            end = text.find("\n", j)
        if end < 0:
            break
        pos = end + 1
    return count


def format_constrained_response(response: str) -> bool:
    """Contains one of "My answer is yes./no./maybe."."""
    text = response.strip()
    return any(option in text for option in CONSTRAINED_RESPONSE_OPTIONS)


def format_number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    """At least ``num_highlights`` non-empty ``*highlighted*`` or ``**highlighted**`` spans."""
    count = sum(1 for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip())
    count += sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip())
    return count >= int(num_highlights)


def format_multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    """At least ``num_sections`` sections, each opened by ``<spliter> <number>``."""
    pattern = r"\s?" + section_spliter.strip() + r"\s?\d+\s?"
    return len(re.split(pattern, response)) - 1 >= int(num_sections)


def format_json_format(response: str) -> bool:
    """The whole response (optionally in a ```json fence) parses as JSON."""
    text = response.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(prefix)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return False
    return True


def format_title(response: str) -> bool:
    """Contains a non-empty title in double angular brackets, like ``<<poem of joy>>``."""
    return any(t.lstrip("<").rstrip(">").strip() for t in find_titles(response))


def find_titles(text: str) -> list[str]:
    """The matches of the reference's ``<<[^\\n]+>>``, found in linear time: on each line, the
    greedy match runs from the first ``<<`` to the last ``>>`` at least one character later."""
    out = []
    for line in text.split("\n"):
        i = line.find("<<")
        k = line.rfind(">>")
        if i >= 0 and k >= i + 3:
            out.append(line[i:k + 2])
    return out


# -- combination ------------------------------------------------------------------------------


def combination_two_responses(response: str) -> bool:
    """Exactly two different non-empty responses separated by ``******``."""
    parts = response.split("******")
    kept = []
    for i, part in enumerate(parts):
        if part.strip():
            kept.append(part.strip())
        elif i not in (0, len(parts) - 1):
            return False
    return len(kept) == 2 and kept[0] != kept[1]


def combination_repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    """The response starts with the request, repeated word for word (case-insensitive)."""
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


# -- start / end ------------------------------------------------------------------------------


def startend_end_checker(response: str, *, end_phrase: str) -> bool:
    """The response ends with ``end_phrase`` (case-insensitive; outer quotes ignored)."""
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def startend_quotation(response: str) -> bool:
    """The whole response is wrapped in double quotation marks."""
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


# -- change case ------------------------------------------------------------------------------


def case_capital_word_frequency(response: str, *, capital_frequency: int,
                                capital_relation: str) -> bool:
    """Number of all-capital words compared with ``capital_frequency``."""
    n = sum(1 for w in text_utils.word_tokenize(response) if w.isupper())
    return _compare(n, int(capital_frequency), capital_relation)


def case_english_capital(response: str) -> bool:
    """All cased characters are upper case and the text is English."""
    if not response.isupper():
        return False
    try:
        return text_utils.detect_language(response) == "en"
    except text_utils.LanguageDetectionError:
        return True


def case_english_lowercase(response: str) -> bool:
    """All cased characters are lower case and the text is English."""
    if not response.islower():
        return False
    try:
        return text_utils.detect_language(response) == "en"
    except text_utils.LanguageDetectionError:
        return True


# -- punctuation ------------------------------------------------------------------------------


def punctuation_no_comma(response: str) -> bool:
    """No ASCII comma anywhere."""
    return "," not in response
