"""One step's experience: generate, verify, shape rewards, and filter groups (dynamic sampling)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import torch

from prorl.algo.core import cosine_length_penalty, filter_groups, overlong_penalty
from prorl.data.dataset import Example, PromptSampler
from prorl.config import RewardConfig
from prorl.rollout.base import Completion, SamplingParams
from prorl.trainer import faults
from prorl.trainer.distributed import World, all_gather
from prorl.verifiers.base import Status


@dataclass
class Group:
    example: Example
    completions: list[Completion]
    scores: list[float]  # verifier scores in [0, 1]
    rewards: list[float]  # scores after shaping (what the advantages use)
    statuses: list[str]
    sampling: SamplingParams  # what the completions were drawn with


@dataclass
class StepExperience:
    groups: list[Group]
    sampling: SamplingParams
    metrics: dict[str, float] = field(default_factory=dict)


class ShapedRewards(NamedTuple):
    rewards: list[float]  # score + all penalties (what the advantages use)
    overlong: list[float]  # DAPO overlong penalty (<= 0)
    truncation: list[float]  # -truncation_penalty for responses without EOS
    length: list[float]  # scheduled cosine length penalty (<= 0)


@dataclass(frozen=True)
class RewardShaping:
    """What is added to a verifier's score at one training step: DAPO's overlong penalty, the
    truncation penalty and ProRL v2's scheduled cosine length penalty (all off by default)."""

    step: int | None = None  # the training step (the cosine penalty's schedule needs it)
    overlong_buffer_len: int = 0
    overlong_penalty_factor: float = 1.0
    truncation_penalty: float = 0.0
    length_penalty_min: float = 0.0
    length_penalty_max: float = 0.0
    length_penalty_period: int = 0
    length_penalty_on_steps: int = 0
    length_penalty_correct_only: bool = True

    @classmethod
    def from_config(cls, reward: RewardConfig, step: int) -> "RewardShaping":
        """The shaping the ``reward`` config section describes, at training step ``step``."""
        return cls(step=step, **{f.name: getattr(reward, f.name) for f in fields(cls) if f.name != "step"})


def shape_rewards(scores: list[float], lengths: list[int], truncated: list[bool], *, max_len: int,
                  shaping: RewardShaping) -> ShapedRewards:
    """Rewards = score + DAPO overlong penalty - truncation penalty + scheduled cosine length penalty
    (on correct responses only when ``length_penalty_correct_only``); also returns each penalty."""
    sh = shaping
    over = overlong_penalty(torch.tensor(lengths), max_len, sh.overlong_buffer_len, sh.overlong_penalty_factor).tolist()
    trunc = [-sh.truncation_penalty if t else 0.0 for t in truncated]
    length = [0.0] * len(scores)
    if sh.length_penalty_max > 0:
        if sh.step is None:
            raise ValueError("shape_rewards: the cosine length penalty needs the training step")
        pen = cosine_length_penalty(torch.tensor(lengths), max_len, sh.step, min_penalty=sh.length_penalty_min,
                                    max_penalty=sh.length_penalty_max, period=sh.length_penalty_period,
                                    on_steps=sh.length_penalty_on_steps).tolist()
        length = [p if (s >= 1.0 or not sh.length_penalty_correct_only) else 0.0 for p, s in zip(pen, scores)]
    return ShapedRewards([s + o + t + ln for s, o, t, ln in zip(scores, over, trunc, length)], over, trunc, length)


def collect(engine, tokenizer, scorer, sampler: PromptSampler, *, num_prompts: int, sampling: SamplingParams,
            dynamic_sampling: bool, max_rounds: int, shaping: RewardShaping, world: World = World()) -> StepExperience:
    """Sample groups until ``num_prompts`` informative groups are kept (or ``max_rounds`` is hit).

    Under torchrun ``num_prompts`` is this rank's share: every round the ranks exchange how many
    prompts each still needs and all draw the same prompts from their (identical) samplers, each
    keeping its own slice, so the samplers never diverge and no prompt is used twice.
    """
    kept: list[Group] = []
    m: dict[str, float] = {"dynamic_sampling/rounds": 0, "dynamic_sampling/generated_groups": 0,
                           "dynamic_sampling/dropped_all_correct": 0, "dynamic_sampling/dropped_all_wrong": 0,
                           "dynamic_sampling/dropped_other_equal": 0}
    all_scores, all_lengths, all_trunc, all_over, all_tpen, all_lpen, statuses = [], [], [], [], [], [], []
    judged_scores: list[float] = []  # scores of items actually judged (infra_error excluded)
    by_source: dict[str, list[float]] = {}
    t_gen = t_rew = 0.0
    rounds, n, max_new_tokens = 0, sampling.n, sampling.max_new_tokens
    while rounds < max_rounds:
        needs = all_gather(world, num_prompts - len(kept))
        if max(needs) == 0:
            break
        rounds += 1
        drawn = sampler.take(sum(needs))
        examples = drawn[sum(needs[:world.rank]):sum(needs[:world.rank + 1])]
        t0 = time.perf_counter()  # a rank with nothing to draw this round still joins the collectives below
        groups = engine.generate([ex.prompt_ids for ex in examples], **sampling.as_kwargs()) if examples else []
        faults.point("generation")
        t1 = time.perf_counter()
        items = []
        for ex, group in zip(examples, groups):
            for c in group:
                items.append({"data_source": ex.data_source, "ability": ex.row.get("ability"),
                              "response": tokenizer.decode(c.token_ids, skip_special_tokens=True),
                              "ground_truth": ex.row["reward_model"]["ground_truth"],
                              "extra_info": ex.row.get("extra_info") or {}})
        verdicts = scorer.score(items) if items else []
        faults.point("scoring")
        t_rew += time.perf_counter() - t1
        t_gen += t1 - t0
        round_groups = []
        for gi, (ex, group) in enumerate(zip(examples, groups)):
            vs = verdicts[gi * n:(gi + 1) * n]
            scores = [v.score for v in vs]
            lengths = [len(c.token_ids) for c in group]
            truncated = [c.truncated for c in group]
            rewards, over, tpen, lpen = shape_rewards(scores, lengths, truncated, max_len=max_new_tokens, shaping=shaping)
            round_groups.append(Group(ex, group, scores, rewards, [v.status.value for v in vs], sampling))
            all_scores += scores
            judged = [s for s, v in zip(scores, vs) if v.status is not Status.INFRA_ERROR]
            judged_scores += judged
            by_source.setdefault(ex.data_source, []).extend(judged)
            all_lengths += lengths
            all_trunc += truncated
            all_over += over
            all_tpen += tpen
            all_lpen += lpen
            statuses += [v.status.value for v in vs]
        m["dynamic_sampling/generated_groups"] += len(round_groups)
        # prompt retirement: every rank records every rank's groups, so the samplers stay identical
        mine = [(sampler.index(g.example), [sc for sc, st in zip(g.scores, g.statuses) if st != "infra_error"])
                for g in round_groups]
        for part in all_gather(world, mine):
            for idx, scores in part:
                sampler.record(idx, scores)
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
    m["reward/length_penalty/mean"] = sum(all_lpen) / n_all
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
    return StepExperience(kept, sampling, m)
