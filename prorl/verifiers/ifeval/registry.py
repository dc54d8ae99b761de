"""Instruction ids -> checkers, kwargs handling, and strict / loose following.

Strict: the response itself must follow the instruction. Loose (the reference's upper
bound): the instruction counts as followed if any of eight variants of the response follows
it: the response, without its first line, without its last line, without both, and each of
these four with every ``*`` removed. An empty (whitespace-only) variant never follows.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prorl.verifiers.ifeval import instructions as ins

Checker = Callable[..., bool]

INSTRUCTIONS: dict[str, Checker] = {
    "keywords:existence": ins.keywords_existence,
    "keywords:frequency": ins.keywords_frequency,
    "keywords:forbidden_words": ins.keywords_forbidden_words,
    "keywords:letter_frequency": ins.keywords_letter_frequency,
    "language:response_language": ins.language_response_language,
    "length_constraints:number_sentences": ins.length_number_sentences,
    "length_constraints:number_paragraphs": ins.length_number_paragraphs,
    "length_constraints:number_words": ins.length_number_words,
    "length_constraints:nth_paragraph_first_word": ins.length_nth_paragraph_first_word,
    "detectable_content:number_placeholders": ins.content_number_placeholders,
    "detectable_content:postscript": ins.content_postscript,
    "detectable_format:number_bullet_lists": ins.format_number_bullet_lists,
    "detectable_format:constrained_response": ins.format_constrained_response,
    "detectable_format:number_highlighted_sections": ins.format_number_highlighted_sections,
    "detectable_format:multiple_sections": ins.format_multiple_sections,
    "detectable_format:json_format": ins.format_json_format,
    "detectable_format:title": ins.format_title,
    "combination:two_responses": ins.combination_two_responses,
    "combination:repeat_prompt": ins.combination_repeat_prompt,
    "startend:end_checker": ins.startend_end_checker,
    "startend:quotation": ins.startend_quotation,
    "change_case:capital_word_frequency": ins.case_capital_word_frequency,
    "change_case:english_capital": ins.case_english_capital,
    "change_case:english_lowercase": ins.case_english_lowercase,
    "punctuation:no_comma": ins.punctuation_no_comma,
}

INSTRUCTION_IDS: tuple[str, ...] = tuple(INSTRUCTIONS)


def _params(fn: Checker) -> tuple[set[str], set[str]]:
    """(all keyword parameters, required ones) of a checker."""
    sig = inspect.signature(fn)
    kw = {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return set(kw), {n for n, p in kw.items() if p.default is inspect.Parameter.empty}


_PARAMS = {iid: _params(fn) for iid, fn in INSTRUCTIONS.items()}


def clean_kwargs(instruction_id: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keep the kwargs that ``instruction_id`` uses, dropping ``None`` values.

    Datasets exported through Hugging Face carry every kwarg key on every instruction, most of
    them null; only the non-null ones that the checker knows are kept. A missing required one
    raises ``ValueError`` (the reference would draw a random value instead).
    """
    if instruction_id not in INSTRUCTIONS:
        raise KeyError(f"unknown IFEval instruction {instruction_id!r}")
    known, required = _PARAMS[instruction_id]
    out = {k: v for k, v in dict(kwargs or {}).items() if v is not None and k in known}
    missing = required - set(out)
    if missing:
        raise ValueError(f"{instruction_id}: missing kwargs {sorted(missing)}")
    return out


def check_instruction(instruction_id: str, response: str, kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether ``response`` follows one instruction (strictly). Whitespace-only never does."""
    args = clean_kwargs(instruction_id, kwargs)
    return bool(response.strip()) and bool(INSTRUCTIONS[instruction_id](response, **args))


def loose_variants(response: str) -> list[str]:
    """The eight response variants that loose evaluation tries (see the module docstring)."""
    lines = response.split("\n")
    no_first = "\n".join(lines[1:]).strip()
    no_last = "\n".join(lines[:-1]).strip()
    no_both = "\n".join(lines[1:-1]).strip()
    bases = [response, no_first, no_last, no_both]
    return bases + [b.replace("*", "") for b in bases]


def _pairs(instruction_ids: Sequence[str], kwargs: Sequence[Mapping | None] | None):
    ids = list(instruction_ids)
    kws = list(kwargs) if kwargs is not None else [{}] * len(ids)
    if len(kws) != len(ids):
        raise ValueError(f"{len(ids)} instruction ids but {len(kws)} kwargs")
    return [(iid, clean_kwargs(iid, kw)) for iid, kw in zip(ids, kws)]


def follow_strict(response: str, instruction_ids: Sequence[str],
                  kwargs: Sequence[Mapping | None] | None = None) -> list[bool]:
    """Per-instruction booleans, strict mode."""
    ok = bool(response.strip())
    return [ok and bool(INSTRUCTIONS[iid](response, **kw)) for iid, kw in _pairs(instruction_ids, kwargs)]


def follow_loose(response: str, instruction_ids: Sequence[str],
                 kwargs: Sequence[Mapping | None] | None = None) -> list[bool]:
    """Per-instruction booleans, loose mode (any of the eight variants follows)."""
    variants = [v for v in loose_variants(response) if v.strip()]
    return [any(INSTRUCTIONS[iid](v, **kw) for v in variants) for iid, kw in _pairs(instruction_ids, kwargs)]


def follow(response: str, instruction_ids: Sequence[str],
           kwargs: Sequence[Mapping | None] | None = None, mode: str = "strict") -> list[bool]:
    """Per-instruction booleans in ``mode`` ("strict" or "loose")."""
    if mode == "strict":
        return follow_strict(response, instruction_ids, kwargs)
    if mode == "loose":
        return follow_loose(response, instruction_ids, kwargs)
    raise ValueError(f"ifeval mode must be 'strict' or 'loose', got {mode!r}")


def parse_spec(ground_truth: Any, extra_info: Mapping | None = None) -> tuple[list[str], list[dict]]:
    """Find ``instruction_id_list`` and ``kwargs`` in a row's ground truth or extra_info.

    Accepted: a dict (or its JSON string) holding both keys, in ``ground_truth`` or in
    ``extra_info``; a bare list of ids in ``ground_truth`` with ``kwargs`` in ``extra_info``.
    """
    def as_obj(x: Any) -> Any:
        if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy arrays from pandas
            x = x.tolist()
        if isinstance(x, (str, bytes)):
            try:
                return json.loads(x)
            except ValueError:
                return x
        return x

    gt = as_obj(ground_truth)
    extra = dict(extra_info or {})
    for src in (gt, extra, as_obj(extra.get("ground_truth"))):
        if isinstance(src, Mapping) and "instruction_id_list" in src:
            ids = as_obj(src["instruction_id_list"])
            kws = as_obj(src.get("kwargs"))
            break
    else:
        if isinstance(gt, (list, tuple)) and all(isinstance(i, str) for i in gt):
            ids, kws = list(gt), as_obj(extra.get("kwargs"))
        else:
            raise ValueError("no IFEval instruction_id_list in ground_truth or extra_info")
    ids = [str(i) for i in ids]
    if kws is None:
        kws = [{} for _ in ids]
    kws = [dict(as_obj(k) or {}) for k in kws]
    if len(kws) != len(ids):
        raise ValueError(f"{len(ids)} instruction ids but {len(kws)} kwargs")
    return ids, kws
