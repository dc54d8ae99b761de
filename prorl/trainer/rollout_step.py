"""One step's experience: generate, verify, shape rewards, and filter groups (dynamic sampling)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from prorl.algo.core import filter_groups, overlong_penalty
from prorl.data.dataset import Example, PromptSampler
from prorl.rollout.base import Completion
from prorl.verifiers.base import Status


@dataclass
class Group:
    example: Example
    completions: list[Completion]
    scores: list[float]  # verifier scores in [0, 1]
    rewards: list[float]  # scores after shaping (what the advantages use)
    statuses: list[str]


@dataclass
class StepExperience:
    groups: list[Group]
    metrics: dict[str, float] = field(default_factory=dict)


def shape_rewards(scores: list[float], lengths: list[int], truncated: list[bool], *, max_len: int,
                  overlong_buffer_len: int, overlong_penalty_factor: float, truncation_penalty: float,
                  ) -> tuple[list[float], list[float], list[float]]:
    """Rewards = score + DAPO overlong penalty - truncation penalty; also returns both penalties."""
    over = overlong_penalty(torch.tensor(lengths), max_len, overlong_buffer_len, overlong_penalty_factor).tolist()
    trunc = [-truncation_penalty if t else 0.0 for t in truncated]
    return [s + o + t for s, o, t in zip(scores, over, trunc)], over, trunc


def collect(engine, tokenizer, scorer, sampler: PromptSampler, *, num_prompts: int, n: int, temperature: float,
            top_p: float, max_new_tokens: int, dynamic_sampling: bool, max_rounds: int,
            shaping: dict) -> StepExperience:
    """Sample groups until ``num_prompts`` informative groups are kept (or ``max_rounds`` is hit)."""
    kept: list[Group] = []
    m: dict[str, float] = {"dynamic_sampling/rounds": 0, "dynamic_sampling/generated_groups": 0,
                           "dynamic_sampling/dropped_all_correct": 0, "dynamic_sampling/dropped_all_wrong": 0,
                           "dynamic_sampling/dropped_other_equal": 0}
    all_scores, all_lengths, all_trunc, all_over, all_tpen, statuses = [], [], [], [], [], []
    judged_scores: list[float] = []  # scores of items actually judged (infra_error excluded)
    by_source: dict[str, list[float]] = {}
    t_gen = t_rew = 0.0
    rounds = 0
    while len(kept) < num_prompts and rounds < max_rounds:
        rounds += 1
        need = num_prompts - len(kept)
        examples = sampler.take(need)
        t0 = time.perf_counter()
        groups = engine.generate([ex.prompt_ids for ex in examples], n=n, temperature=temperature,
                                 top_p=top_p, max_new_tokens=max_new_tokens)
        t1 = time.perf_counter()
        items = []
        for ex, group in zip(examples, groups):
            for c in group:
                items.append({"data_source": ex.data_source, "ability": ex.row.get("ability"),
                              "response": tokenizer.decode(c.token_ids, skip_special_tokens=True),
                              "ground_truth": ex.row["reward_model"]["ground_truth"],
                              "extra_info": ex.row.get("extra_info") or {}})
        verdicts = scorer.score(items)
        t_rew += time.perf_counter() - t1
        t_gen += t1 - t0
        round_groups = []
        for gi, (ex, group) in enumerate(zip(examples, groups)):
            vs = verdicts[gi * n:(gi + 1) * n]
            scores = [v.score for v in vs]
            lengths = [len(c.token_ids) for c in group]
            truncated = [c.truncated for c in group]
            rewards, over, tpen = shape_rewards(scores, lengths, truncated, max_len=max_new_tokens, **shaping)
            round_groups.append(Group(ex, group, scores, rewards, [v.status.value for v in vs]))
            all_scores += scores
            judged = [s for s, v in zip(scores, vs) if v.status is not Status.INFRA_ERROR]
            judged_scores += judged
            by_source.setdefault(ex.data_source, []).extend(judged)
            all_lengths += lengths
            all_trunc += truncated
            all_over += over
            all_tpen += tpen
            statuses += [v.status.value for v in vs]
        m["dynamic_sampling/generated_groups"] += len(round_groups)
        if dynamic_sampling:
            res = filter_groups([g.rewards for g in round_groups])
            m["dynamic_sampling/dropped_all_correct"] += res.dropped_all_correct
            m["dynamic_sampling/dropped_all_wrong"] += res.dropped_all_wrong
            m["dynamic_sampling/dropped_other_equal"] += res.dropped_other_equal
            kept += [round_groups[i] for i in res.keep]
        else:
            kept += round_groups
    kept = kept[:num_prompts]
    m["dynamic_sampling/rounds"] = rounds
    m["dynamic_sampling/kept_groups"] = len(kept)
    m["dynamic_sampling/yield"] = len(kept) / max(1, m["dynamic_sampling/generated_groups"])
    m["dynamic_sampling/batch_underfilled"] = float(len(kept) < num_prompts)
    n_all = max(1, len(all_scores))
    # over everything generated and judged, before filtering (infra_error items are no verdict)
    m["critic/score/mean"] = sum(judged_scores) / max(1, len(judged_scores))
    m["critic/score/max"] = max(judged_scores, default=0.0)
    m["critic/score/min"] = min(judged_scores, default=0.0)
    m["reward/overlong_penalty/mean"] = sum(all_over) / n_all
    m["reward/truncation_penalty/mean"] = sum(all_tpen) / n_all
    m["response_length/mean"] = sum(all_lengths) / n_all
    m["response_length/max"] = max(all_lengths, default=0)
    m["response_length/min"] = min(all_lengths, default=0)
    m["response_length/clip_ratio"] = sum(all_trunc) / n_all
    for st in ("correct", "wrong", "no_answer", "error", "timeout", "infra_error"):
        m[f"reward/status/{st}"] = statuses.count(st) / n_all
    for ds, sc in sorted((ds, sc) for ds, sc in by_source.items() if sc):
        m[f"critic/score/{ds}/mean"] = sum(sc) / len(sc)
        m[f"critic/acc/{ds}/mean"] = sum(x >= 1.0 for x in sc) / len(sc)
    m["timing_s/gen"] = t_gen
    m["timing_s/reward"] = t_rew
    return StepExperience(kept, m)
