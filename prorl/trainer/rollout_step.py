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


def make_group(example: Example, completions: list[Completion], verdicts: list, *, sampling: SamplingParams,
               shaping: RewardShaping) -> tuple[Group, ShapedRewards]:
    """One prompt's scored group: verifier scores, shaped rewards and statuses."""
    scores = [v.score for v in verdicts]
    shaped = shape_rewards(scores, [len(c.token_ids) for c in completions], [c.truncated for c in completions],
                           max_len=sampling.max_new_tokens, shaping=shaping)
    return Group(example, completions, scores, shaped.rewards, [v.status.value for v in verdicts], sampling), shaped


def judged_scores(group: Group) -> list[float]:
    """The scores that are a verdict on the response (infra_error items are none)."""
    return [s for s, st in zip(group.scores, group.statuses) if st != Status.INFRA_ERROR.value]


class RolloutStats:
    """The step's rollout metrics (verl's names) over every generated group, before filtering:
    scores, penalties, lengths, statuses, dynamic-sampling counts, per-source accuracy."""

    def __init__(self):
        self.m: dict[str, float] = {"dynamic_sampling/rounds": 0, "dynamic_sampling/generated_groups": 0,
                                    "dynamic_sampling/dropped_all_correct": 0, "dynamic_sampling/dropped_all_wrong": 0,
                                    "dynamic_sampling/dropped_other_equal": 0}
        self.scores: list[float] = []
        self.lengths: list[int] = []
        self.truncated: list[bool] = []
        self.penalties: tuple[list[float], list[float], list[float]] = ([], [], [])
        self.statuses: list[str] = []
        self.judged: list[float] = []  # scores of items actually judged (infra_error excluded)
        self.by_source: dict[str, list[float]] = {}

    def add(self, group: Group, shaped: ShapedRewards) -> None:
        judged = judged_scores(group)
        self.m["dynamic_sampling/generated_groups"] += 1
        self.scores += group.scores
        self.judged += judged
        self.by_source.setdefault(group.example.data_source, []).extend(judged)
        self.lengths += [len(c.token_ids) for c in group.completions]
        self.truncated += [c.truncated for c in group.completions]
        for acc, vals in zip(self.penalties, (shaped.overlong, shaped.truncation, shaped.length)):
            acc += vals
        self.statuses += group.statuses

    def keep(self, groups: list[Group], dynamic_sampling: bool) -> list[Group]:
        """The groups DAPO's dynamic sampling keeps (all of them when it is off), counting the drops."""
        if not dynamic_sampling:
            return list(groups)
        res = filter_groups([g.rewards for g in groups])
        self.m["dynamic_sampling/dropped_all_correct"] += res.dropped_all_correct
        self.m["dynamic_sampling/dropped_all_wrong"] += res.dropped_all_wrong
        self.m["dynamic_sampling/dropped_other_equal"] += res.dropped_other_equal
        return [groups[i] for i in res.keep]

    def metrics(self, *, kept: int, wanted: int, rounds: int) -> dict[str, float]:
        m = dict(self.m)
        m["dynamic_sampling/rounds"] = rounds
        m["dynamic_sampling/kept_groups"] = kept
        m["dynamic_sampling/yield"] = kept / max(1, m["dynamic_sampling/generated_groups"])
        m["dynamic_sampling/batch_underfilled"] = float(kept < wanted)
        n_all, judged = max(1, len(self.scores)), self.judged
        m["critic/score/mean"] = sum(judged) / max(1, len(judged))
        m["critic/score/max"] = max(judged, default=0.0)
        m["critic/score/min"] = min(judged, default=0.0)
        over, tpen, lpen = self.penalties
        m["reward/overlong_penalty/mean"] = sum(over) / n_all
        m["reward/truncation_penalty/mean"] = sum(tpen) / n_all
        m["reward/length_penalty/mean"] = sum(lpen) / n_all
        m["response_length/mean"] = sum(self.lengths) / n_all
        m["response_length/max"] = max(self.lengths, default=0)
        m["response_length/min"] = min(self.lengths, default=0)
        m["response_length/clip_ratio"] = sum(self.truncated) / n_all
        for st in ("correct", "wrong", "no_answer", "error", "timeout", "infra_error"):
            m[f"reward/status/{st}"] = self.statuses.count(st) / n_all
        for ds, sc in sorted((ds, sc) for ds, sc in self.by_source.items() if sc):
            m[f"critic/score/{ds}/mean"] = sum(sc) / len(sc)
            m[f"critic/acc/{ds}/mean"] = sum(x >= 1.0 for x in sc) / len(sc)
        return m


def verifier_item(example: Example, response: str) -> dict:
    """What the scorer needs to judge one response to ``example``."""
    return {"data_source": example.data_source, "ability": example.row.get("ability"), "response": response,
            "ground_truth": example.row["reward_model"]["ground_truth"], "extra_info": example.row.get("extra_info") or {}}


def collect(engine, tokenizer, scorer, sampler: PromptSampler, *, num_prompts: int, sampling: SamplingParams,
            dynamic_sampling: bool, max_rounds: int, shaping: RewardShaping, world: World = World()) -> StepExperience:
    """Sample groups until ``num_prompts`` informative groups are kept (or ``max_rounds`` is hit).

    Under torchrun ``num_prompts`` is this rank's share: every round the ranks exchange how many
    prompts each still needs and all draw the same prompts from their (identical) samplers, each
    keeping its own slice, so the samplers never diverge and no prompt is used twice.
    """
    kept: list[Group] = []
    stats = RolloutStats()
    t_gen = t_rew = 0.0
    rounds, n = 0, sampling.n
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
        items = [verifier_item(ex, tokenizer.decode(c.token_ids, skip_special_tokens=True))
                 for ex, group in zip(examples, groups) for c in group]
        verdicts = scorer.score(items) if items else []
        faults.point("scoring")
        t_rew += time.perf_counter() - t1
        t_gen += t1 - t0
        round_groups = []
        for gi, (ex, group) in enumerate(zip(examples, groups)):
            g, shaped = make_group(ex, group, verdicts[gi * n:(gi + 1) * n], sampling=sampling, shaping=shaping)
            stats.add(g, shaped)
            round_groups.append(g)
        # prompt retirement: every rank records every rank's groups, so the samplers stay identical
        mine = [(sampler.index(g.example), judged_scores(g)) for g in round_groups]
        for part in all_gather(world, mine):
            for idx, scores in part:
                sampler.record(idx, scores)
        kept += stats.keep(round_groups, dynamic_sampling)
    kept = kept[:num_prompts]
    m = stats.metrics(kept=len(kept), wanted=num_prompts, rounds=rounds)
    m["timing_s/gen"] = t_gen
    m["timing_s/reward"] = t_rew
    return StepExperience(kept, sampling, m)
