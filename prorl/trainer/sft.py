"""Supervised fine-tuning (the warm start): next-token loss on response tokens only."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import torch

from prorl.models.layout import pad_batch
from prorl.models.policy import response_logprobs


def encode_pairs(tokenizer, pairs: Sequence[tuple[list[dict], str]]) -> list[tuple[list[int], list[int]]]:
    """(chat messages, response text) -> (prompt ids via the chat template, response ids + EOS)."""
    out = []
    for messages, response in pairs:
        p = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if isinstance(p, dict) or hasattr(p, "input_ids"):
            p = p["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((list(p), r))
    return out


def sft(
    model,
    tokenizer,
    examples: Sequence[tuple[list[int], list[int]]],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup: int = 50,
    seed: int = 0,
    log_every: int = 100,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place on (prompt ids, response ids) pairs; returns the loss per step."""
    from tqdm import tqdm

    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / max(steps, 1))
    )
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc="sft", disable=not progress)
    for step in bar:
        batch = rng.sample(list(examples), k=min(batch_size, len(examples)))
        padded = pad_batch([b[0] for b in batch], [b[1] for b in batch], tokenizer.pad_token_id)
        logp, _ = response_logprobs(model, padded.input_ids, padded.attention_mask, padded.response_len)
        loss = -(logp * padded.response_mask).sum() / padded.response_mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


def build_builtin_warmstart(
    out_dir: str | Path,
    *,
    tasks: Sequence[str] = ("add", "sort"),
    correct_prob: float = 0.3,
    size_per_task: int = 4000,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    number_coverage: float = 0.0,
) -> Path:
    """Build the tiny model from scratch and fine-tune it on the noisy teacher of the built-in tasks.

    The teacher answers correctly with probability ``correct_prob`` and otherwise makes its
    systematic slip, so the warm start knows the skill but uses it unreliably; see
    :mod:`prorl.data.builtin_tasks` (chain tasks: every step is right with ``correct_prob``). The
    tokenizer is trained on the text of ``tasks`` too, except for the default (add, sort), which
    keeps the shipped tokenizer. ``number_coverage`` > 0 adds, per chain task, that fraction of
    ``size_per_task`` extra problems starting above the task's range (numbers up to 99; they belong
    to no split, see :func:`prorl.data.chain_tasks.coverage_problem`). Reproducible: same arguments,
    same checkpoint.
    """
    from prorl.data.builtin_tasks import (ORIGINAL_TASKS, Problem, chain_level, generate_problems, is_chain,
                                          make_row, teacher_response, usable_size)
    from prorl.data.chain_tasks import coverage_problem
    from prorl.models.tiny import build_model, build_tokenizer, save_tiny

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tasks=None if tuple(tasks) == ORIGINAL_TASKS else tasks)
    model = build_model(tokenizer, seed=seed)
    rng = random.Random(seed)
    pairs = []
    for task in tasks:
        problems = generate_problems(task, usable_size(task, size_per_task), seed, "train")
        # small levels (chain2) are drawn several times, each with a fresh teacher response, so the
        # model learns the teacher's per-step odds rather than one fixed response per problem
        for _ in range(-(-size_per_task // len(problems))):
            for i, p in enumerate(problems):
                row = make_row(task, p, "train", i)
                pairs.append((row["prompt"], teacher_response(task, p.answer, rng, correct_prob, key=p.key)))
        if number_coverage > 0 and is_chain(task):
            level = chain_level(task)
            for i in range(int(number_coverage * size_per_task)):
                p = Problem(*coverage_problem(level, rng))
                row = make_row(task, p, "train", i)
                pairs.append((row["prompt"], teacher_response(task, p.answer, rng, correct_prob, key=p.key)))
    sft(model, tokenizer, encode_pairs(tokenizer, pairs), steps=steps, batch_size=batch_size, lr=lr,
        seed=seed, progress=progress)
    return save_tiny(model, tokenizer, out_dir)
