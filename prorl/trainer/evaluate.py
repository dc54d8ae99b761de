"""Evaluation: k samples per prompt, scored, summarised per data_source.

Reports pass@1 (mean over samples), unbiased pass@k for k = 1, 2, 4, ... <= k, maj@k where
answers can be compared, mean response length and truncation rate. The same code runs as
in-training validation (logged as ``val-core/{data_source}/acc/mean@n`` and ``.../pass@k``) and as
``prorl eval``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from prorl.algo.passk import default_ks, maj_at_k, pass_at_k_per_prompt
from prorl.data.dataset import Example
from prorl.verifiers.base import strip_thinking
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
    """Per data_source, the raw per-prompt records (scores, correctness, answers, lengths,
    truncation) that :func:`summarise_records` turns into metrics; plain data, so ranks can
    each evaluate a share and gather the records."""
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
    scores, correct = rec["scores"], rec["correct"]
    num = len(scores)
    out = {
        "num_prompts": num,
        "samples_per_prompt": n,
        "mean_score": sum(map(sum, scores)) / max(1, num * n),
        "pass@1": sum(map(sum, correct)) / max(1, num * n),
        "mean_response_length": sum(rec["lengths"]) / max(1, len(rec["lengths"])),
        "truncation_rate": sum(rec["truncated"]) / max(1, len(rec["truncated"])),
    }
    for k, v in pass_at_k_per_prompt(correct, default_ks(n)).items():
        out[f"pass@{k}"] = v
    if any(a is not None for row in rec["answers"] for a in row):
        out[f"maj@{n}"] = maj_at_k(rec["answers"], correct, n)
    return out


def validation_metrics(results: dict[str, dict], n: int) -> dict[str, float]:
    """verl-style metric names for in-training validation."""
    out = {}
    for ds, r in results.items():
        out[f"val-core/{ds}/acc/mean@{n}"] = r["mean_score"]
        out[f"val-core/{ds}/pass@1"] = r["pass@1"]
        for k in default_ks(n):
            out[f"val-core/{ds}/pass@{k}"] = r[f"pass@{k}"]
        if f"maj@{n}" in r:
            out[f"val-core/{ds}/maj@{n}"] = r[f"maj@{n}"]
        out[f"val-aux/{ds}/response_length/mean"] = r["mean_response_length"]
        out[f"val-aux/{ds}/response_length/clip_ratio"] = r["truncation_rate"]
    return out
