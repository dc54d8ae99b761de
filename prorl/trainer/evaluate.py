"""Evaluation: k samples per prompt, scored, summarised per data_source.

Reports pass@1, unbiased pass@k for k = 1, 2, 4, ... <= k, maj@k where answers can be compared,
mean response length and truncation rate. The same code runs as in-training validation (logged as
``val-core/{data_source}/acc/mean@n`` and ``.../pass@k``) and as ``prorl eval``.

Samples whose verdict is ``infra_error`` (a reward worker died, the reward service was unreachable)
are no judgement of the response, so every score metric is computed from the *scored* samples only,
as if the others had never been drawn; otherwise an outage would look like a collapse and feed the
best checkpoint, the ``val_degradation`` trigger and rollback with zeros:

* ``mean_score`` and ``pass@1``: mean over prompts of each prompt's mean over its scored samples
  (with nothing missing this is the plain mean over all samples); prompts without any scored
  sample are left out.
* ``pass@k``: the unbiased estimator from a prompt's scored samples, averaged over the prompts with
  at least k of them (a prompt with fewer scored samples than k says nothing about pass@k).
* ``maj@n``: the majority answer among a prompt's scored samples.
* A source with no scored sample at all has ``None`` for these (JSON ``null``; not logged).
* Response length and truncation rate stay over every generated sample: they do not need a verdict.

``num_scored`` and ``infra_errors`` count the samples; :func:`usable_for_watchdog` decides whether
a validation has enough scored samples to be trusted by the reset watchdog.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from prorl.algo.passk import default_ks, maj_at_k, pass_at_k
from prorl.data.dataset import Example
from prorl.verifiers.base import Status, strip_thinking
from prorl.verifiers.answer_tags import extract_answer as extract_tagged_answer
from prorl.verifiers.math import last_boxed


def extract_answer(text: str) -> str | None:
    """A comparable final answer for maj@k: the last \\boxed{} (as the math verifier reads it), else
    the last <answer> tag (as the logic verifier reads it), whitespace-normalised."""
    text = strip_thinking(text)
    found = last_boxed(text)[0]
    if found is None:
        found = extract_tagged_answer(text)
    return " ".join(found.split()) if found is not None else None


def evaluate(
    engine,
    tokenizer,
    scorer,
    examples: Sequence[Example],
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    progress: bool = False,
) -> dict[str, dict]:
    """Sample ``n`` responses per example and summarise per data_source (plus ``"all"``)."""
    records = sample_and_score(engine, tokenizer, scorer, examples, n=n, temperature=temperature, top_p=top_p,
                               max_new_tokens=max_new_tokens, progress=progress)
    return summarise_records([records], n)


def sample_and_score(engine, tokenizer, scorer, examples: Sequence[Example], *, n: int, temperature: float,
                     top_p: float, max_new_tokens: int, progress: bool = False) -> dict[str, dict[str, list]]:
    """Per data_source, the raw per-prompt records (scores, correctness, whether each sample was
    scored at all, answers, lengths, truncation) that :func:`summarise_records` turns into metrics;
    plain data, so ranks can each evaluate a share and gather the records."""
    from tqdm import tqdm

    chunk = max(1, 256 // n)
    per_source: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    bar = tqdm(total=len(examples), desc="eval", disable=not progress, leave=False)
    for start in range(0, len(examples), chunk):
        batch = examples[start:start + chunk]
        groups = engine.generate([ex.prompt_ids for ex in batch], n=n, temperature=temperature,
                                 top_p=top_p, max_new_tokens=max_new_tokens)
        items, meta = [], []
        for ex, group in zip(batch, groups):
            for c in group:
                text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
                items.append({"data_source": ex.data_source, "ability": ex.row.get("ability"), "response": text,
                              "ground_truth": ex.row["reward_model"]["ground_truth"],
                              "extra_info": ex.row.get("extra_info") or {}})
                meta.append((len(c.token_ids), c.truncated, extract_answer(text)))
        verdicts = scorer.score(items)
        for gi, ex in enumerate(batch):
            rec = per_source[ex.data_source]
            sl = slice(gi * n, (gi + 1) * n)
            rec["scores"].append([v.score for v in verdicts[sl]])
            rec["correct"].append([v.score >= 1.0 for v in verdicts[sl]])
            rec["scored"].append([v.status != Status.INFRA_ERROR for v in verdicts[sl]])
            rec["answers"].append([m[2] for m in meta[sl]])
            rec["lengths"].extend(m[0] for m in meta[sl])
            rec["truncated"].extend(m[1] for m in meta[sl])
        bar.update(len(batch))
    bar.close()
    return {ds: dict(rec) for ds, rec in per_source.items()}


def summarise_records(parts: Sequence[dict[str, dict[str, list]]], n: int) -> dict[str, dict]:
    """Metrics per data_source (plus ``"all"`` when there are several) from one or more ranks' records."""
    per_source: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for part in parts:
        for ds, rec in part.items():
            for k, v in rec.items():
                per_source[ds][k].extend(v)
    results = {ds: summarise(rec, n) for ds, rec in sorted(per_source.items())}
    if len(results) > 1:
        merged: dict[str, list] = defaultdict(list)
        for rec in per_source.values():
            for k, v in rec.items():
                merged[k].extend(v)
        results["all"] = summarise(merged, n)
    return results


def summarise(rec: dict[str, list], n: int) -> dict:
    """One source's metrics from its records; score metrics over scored samples only (module doc)."""
    keep = [[i for i, ok in enumerate(row) if ok] for row in rec["scored"]]
    scores = [[row[i] for i in idx] for row, idx in zip(rec["scores"], keep) if idx]
    correct = [[row[i] for i in idx] for row, idx in zip(rec["correct"], keep) if idx]
    answers = [[row[i] for i in idx] for row, idx in zip(rec["answers"], keep) if idx]
    num_scored = sum(map(len, scores))
    out = {
        "num_prompts": len(rec["scores"]),
        "samples_per_prompt": n,
        "num_scored": num_scored,
        "infra_errors": sum(map(len, rec["scores"])) - num_scored,
        "mean_score": _mean([sum(row) / len(row) for row in scores]),
        "mean_response_length": sum(rec["lengths"]) / max(1, len(rec["lengths"])),
        "truncation_rate": sum(rec["truncated"]) / max(1, len(rec["truncated"])),
    }
    for k in default_ks(n):  # k = 1 is pass@1: the mean over prompts of each one's accuracy
        out[f"pass@{k}"] = _mean([pass_at_k(len(row), sum(row), k) for row in correct if len(row) >= k])
    if any(a is not None for row in rec["answers"] for a in row):
        out[f"maj@{n}"] = _mean([maj_at_k([a], [c], len(a)) for a, c in zip(answers, correct)])
    return out


def _mean(values: list[float]) -> float | None:
    """The mean, or ``None`` when there is nothing to average (no scored sample)."""
    return sum(values) / len(values) if values else None


def usable_for_watchdog(results: dict[str, dict], min_fraction: float) -> tuple[bool, str]:
    """Whether a validation may feed the best checkpoint, the reset triggers and rollback: every
    data_source (and so the total) must have at least ``min_fraction`` of its samples scored, and at
    least one. Returns ``(usable, reason)``; the reason names the sources that fall short."""
    sources = {ds: r for ds, r in results.items() if ds != "all"}
    if not sources:
        return False, "no validation samples"
    short = []
    for ds, r in sources.items():
        total = r["num_scored"] + r["infra_errors"]
        if r["num_scored"] == 0 or r["num_scored"] / total < min_fraction:
            short.append(f"{ds} {r['num_scored']}/{total}")
    scored = sum(r["num_scored"] for r in sources.values())
    total = scored + sum(r["infra_errors"] for r in sources.values())
    if not short:
        return True, f"{scored}/{total} samples scored"
    return False, (f"too few samples scored (the rest infra_error) for validation.min_scored_fraction="
                   f"{min_fraction:g}: {', '.join(short)}; {scored}/{total} in all")


def validation_metrics(results: dict[str, dict], n: int) -> dict[str, float]:
    """verl-style metric names for in-training validation, plus the ``infra_error`` counts
    (``val-aux/infra_error`` in all, ``val-aux/{ds}/infra_error`` per source). A score metric
    without a value (no scored sample) is left out rather than logged as 0."""
    out: dict[str, float] = {"val-aux/infra_error": sum(r["infra_errors"] for ds, r in results.items() if ds != "all")}
    for ds, r in results.items():
        scores = {f"val-core/{ds}/acc/mean@{n}": r["mean_score"],
                  **{f"val-core/{ds}/pass@{k}": r[f"pass@{k}"] for k in default_ks(n)}}
        if f"maj@{n}" in r:
            scores[f"val-core/{ds}/maj@{n}"] = r[f"maj@{n}"]
        out |= {k: v for k, v in scores.items() if v is not None}
        out[f"val-aux/{ds}/infra_error"] = r["infra_errors"]
        out[f"val-aux/{ds}/response_length/mean"] = r["mean_response_length"]
        out[f"val-aux/{ds}/response_length/clip_ratio"] = r["truncation_rate"]
    return out
