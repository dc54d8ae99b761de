"""Unit tests of HFRolloutEngine (prorl/rollout/hf.py): the EOS cut, the truncated flag, grouping by
prompt across ``max_batch_size`` chunks, several EOS ids, and what it passes to ``generate``.

A stub model with a scripted ``generate`` controls every token, so each branch is exercised exactly;
one test runs the real tiny policy through HF ``generate`` to check the same contract end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prorl.rollout.base import Completion
from prorl.rollout.hf import HFRolloutEngine

PAD, EOS, EOS2 = 0, 2, 3
MAX_NEW = 5


class ScriptedModel(torch.nn.Module):
    """``generate`` returns, for each prompt (keyed by its unpadded tokens) and sample k, the scripted
    new tokens, right-padded with PAD to the longest in the call (what HF does for finished rows)."""

    def __init__(self, script: dict[tuple[int, ...], list[list[int]]]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # the engine reads the device from a parameter
        self.script = script
        self.calls: list[dict] = []

    def generate(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_return_sequences: int,
                 max_new_tokens: int, **kw) -> torch.Tensor:
        assert not self.training, "generate must run in eval mode"
        if not kw["do_sample"] and num_return_sequences > 1:  # as transformers does
            raise ValueError("Greedy methods without beam search do not support `num_return_sequences` > 1")
        self.calls.append({"input_ids": input_ids.clone(), "attention_mask": attention_mask.clone(),
                           "n": num_return_sequences, "max_new_tokens": max_new_tokens, **kw})
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = tuple(t for t, m in zip(ids, mask) if m)
            samples = self.script[prompt][:num_return_sequences]
            assert len(samples) == num_return_sequences
            for new in samples:  # HF order: the n samples of a prompt are adjacent
                assert len(new) <= max_new_tokens
                rows.append(ids + new)
        width = max(len(r) for r in rows)
        return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])


def _engine(script, *, eos=(EOS,), max_batch_size: int = 256) -> tuple[HFRolloutEngine, ScriptedModel]:
    model = ScriptedModel(script)
    eos_id = eos[0] if len(eos) == 1 else list(eos)
    return HFRolloutEngine(model, eos_token_id=eos_id, pad_token_id=PAD, max_batch_size=max_batch_size), model


def _gen(engine: HFRolloutEngine, prompts, n: int, **kw) -> list[list[Completion]]:
    args = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": MAX_NEW, **kw}
    return engine.generate(prompts, n=n, **args)


# --------------------------------------------------------------------------------------------
# the EOS cut and the truncated flag
# --------------------------------------------------------------------------------------------
CUT_CASES = [
    # (new tokens from generate, expected token_ids, expected truncated)
    ([7, 8, EOS, 9, 10], [7, 8, EOS], False),  # tokens after the first EOS dropped, EOS kept
    ([EOS, 9, EOS, 4, 4], [EOS], False),  # EOS first: a one-token response
    ([7, EOS, EOS, 4, 4], [7, EOS], False),  # only the first EOS counts
    ([5, 6, 7, 8, EOS], [5, 6, 7, 8, EOS], False),  # EOS as the very last allowed token: not truncated
    ([5, 6, 7, 8, 9], [5, 6, 7, 8, 9], True),  # no EOS within max_new_tokens
    ([4, EOS], [4, EOS], False),  # finished early: PAD tail (from the longer rows) removed
    ([PAD, 6, EOS], [PAD, 6, EOS], False),  # a PAD id before EOS is a real token, not a cut
]


@pytest.mark.parametrize("new, expected, truncated", CUT_CASES)
def test_eos_cut_and_truncated_flag(new, expected, truncated):
    # a second, longer row in the same call makes generate pad the first one
    engine, _ = _engine({(11, 12): [new], (13,): [[5, 6, 7, 8, 9]]})
    (got,), (other,) = _gen(engine, [[11, 12], [13]], n=1)
    assert got.token_ids == expected and got.truncated is truncated
    assert other.token_ids == [5, 6, 7, 8, 9] and other.truncated is True


def test_truncated_response_keeps_exactly_max_new_tokens():
    engine, model = _engine({(11,): [[1, 4, 5, 6]]})
    (got,), = _gen(engine, [[11]], n=1, max_new_tokens=4)
    assert got.token_ids == [1, 4, 5, 6] and got.truncated
    assert model.calls[0]["max_new_tokens"] == 4


def test_several_eos_ids_cut_at_the_first_of_any():
    script = {(11,): [[4, EOS2, EOS, 9, 9], [4, EOS, EOS2, 9, 9], [4, 5, 6, 7, 8]]}
    engine, model = _engine(script, eos=(EOS, EOS2))
    (a, b, c), = _gen(engine, [[11]], n=3)
    assert (a.token_ids, a.truncated) == ([4, EOS2], False)
    assert (b.token_ids, b.truncated) == ([4, EOS], False)
    assert (c.token_ids, c.truncated) == ([4, 5, 6, 7, 8], True)
    assert model.calls[0]["eos_token_id"] == [EOS, EOS2]  # generate stops on either
    # with only EOS as the stop token, EOS2 is an ordinary token
    engine, _ = _engine(script, eos=(EOS,))
    (a, _, _), = _gen(engine, [[11]], n=3)
    assert (a.token_ids, a.truncated) == ([4, EOS2, EOS], False)


# --------------------------------------------------------------------------------------------
# grouping: n completions per prompt, in prompt order, across max_batch_size chunks
# --------------------------------------------------------------------------------------------
def _grouping_script(num_prompts: int, n: int) -> tuple[list[list[int]], dict]:
    """Prompts of different lengths; sample k of prompt i answers [10 * i + k + 20, EOS]
    (or runs to the limit when k is odd, so both flags occur in every group)."""
    prompts = [[100 + i] * (1 + i % 3) for i in range(num_prompts)]
    script = {tuple(p): [[10 * i + k + 20, EOS] if k % 2 == 0 else [10 * i + k + 20] * MAX_NEW for k in range(n)]
              for i, p in enumerate(prompts)}
    return prompts, script


@pytest.mark.parametrize("num_prompts, n, max_batch_size, chunk_sizes", [
    (5, 2, 4, [2, 2, 1]),  # 2 prompts (4 sequences) per generate call
    (5, 3, 256, [5]),  # everything in one call
    (3, 4, 4, [1, 1, 1]),  # max_batch_size == n: one prompt per call
    (4, 1, 3, [3, 1]),
])
def test_grouped_by_prompt_in_order_across_chunks(num_prompts, n, max_batch_size, chunk_sizes):
    prompts, script = _grouping_script(num_prompts, n)
    engine, model = _engine(script, max_batch_size=max_batch_size)
    groups = _gen(engine, prompts, n=n)
    assert [c["input_ids"].shape[0] for c in model.calls] == chunk_sizes
    assert all(c["n"] == n for c in model.calls)
    assert len(groups) == num_prompts and all(len(g) == n for g in groups)
    for i, group in enumerate(groups):
        for k, comp in enumerate(group):
            tok = 10 * i + k + 20
            if k % 2 == 0:
                assert (comp.token_ids, comp.truncated) == ([tok, EOS], False), (i, k)
            else:
                assert (comp.token_ids, comp.truncated) == ([tok] * MAX_NEW, True), (i, k)


# --------------------------------------------------------------------------------------------
# what generate receives, and the model's mode
# --------------------------------------------------------------------------------------------
def test_prompts_are_left_padded_with_a_matching_mask():
    engine, model = _engine({(11, 12, 13): [[EOS]], (14,): [[EOS]]})
    _gen(engine, [[11, 12, 13], [14]], n=1)
    call = model.calls[0]
    assert call["input_ids"].tolist() == [[11, 12, 13], [PAD, PAD, 14]]
    assert call["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert call["pad_token_id"] == PAD


@pytest.mark.parametrize("temperature, top_p, sample", [(0.0, 0.9, False), (0.7, 0.9, True), (1.2, 1.0, True)])
def test_sampling_arguments(temperature, top_p, sample):
    engine, model = _engine({(11,): [[EOS]]})
    _gen(engine, [[11]], n=1, temperature=temperature, top_p=top_p)
    call = model.calls[0]
    assert call["do_sample"] is sample
    assert call["temperature"] == (temperature if sample else None)
    assert call["top_p"] == (top_p if sample else None)
    assert call["top_k"] is None  # no hidden top-k=50 default


def test_real_sampling_is_not_top_k_truncated():
    """A near-uniform random policy over ~330 tokens: 256 one-token samples of one prompt must use far
    more than 50 distinct tokens: the explicit ``top_k=None`` keeps transformers from filling in its
    global default top_k=50, which would cap them at 50."""
    from prorl.models.policy import load_policy
    from prorl.models.tiny import build_model

    _, tok = load_policy(TINY)
    model = build_model(tok, seed=0)
    engine = HFRolloutEngine(model, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_batch_size=256)
    torch.manual_seed(0)
    [group] = engine.generate([list(tok("What is 3+4?")["input_ids"])], n=256, temperature=1.0, top_p=1.0,
                              max_new_tokens=1)
    assert len({c.token_ids[0] for c in group}) > 100


def test_greedy_with_several_samples_per_prompt():
    """Greedy (temperature 0) with n > 1, e.g. validation at temperature 0: one greedy sequence per
    prompt, repeated n times in its group (transformers refuses num_return_sequences > 1 greedily)."""
    prompts, script = _grouping_script(3, 2)
    engine, model = _engine(script, max_batch_size=4)
    groups = _gen(engine, prompts, n=2, temperature=0.0)
    assert [c["n"] for c in model.calls] == [1, 1] and [c["input_ids"].shape[0] for c in model.calls] == [2, 1]
    assert [[c.token_ids for c in g] for g in groups] == [[[10 * i + 20, EOS]] * 2 for i in range(3)]
    assert all(c.truncated is False for g in groups for c in g)


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_restored_even_on_error(training):
    engine, model = _engine({(11,): [[EOS]]})
    model.train(training)
    _gen(engine, [[11]], n=1)
    assert model.training is training
    with pytest.raises(KeyError):  # an unscripted prompt: generate raises
        _gen(engine, [[99]], n=1)
    assert model.training is training


# --------------------------------------------------------------------------------------------
# end to end through HF generate with the real tiny policy
# --------------------------------------------------------------------------------------------
TINY = Path(__file__).resolve().parents[2] / "prorl" / "assets" / "tiny-warmstart"


def test_real_generate_matches_one_prompt_at_a_time():
    """Greedy, batched and left-padded through the engine (2 prompts per call) equals generating each
    prompt alone, cut at the first of two stop tokens picked from inside the greedy outputs."""
    from prorl.models.policy import load_policy

    model, tok = load_policy(TINY)
    model.eval()
    texts = ["What is 3+4?", "Sort ascending: 9 1 5 3 3", "What is 88+11?", "Hi"]
    prompts = [list(tok(t)["input_ids"]) for t in texts]
    assert len({len(p) for p in prompts}) > 1
    limit = 12

    def alone(p: list[int], eos: list[int] | None) -> list[int]:
        out = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             do_sample=False, max_new_tokens=limit, eos_token_id=eos, pad_token_id=PAD,
                             temperature=None, top_p=None, top_k=None)
        return out[0, len(p):].tolist()

    free = [alone(p, None) for p in prompts]
    # stop tokens: one from the start of the first output, one from the middle of the second
    stops = sorted({free[0][min(2, len(free[0]) - 1)], free[1][len(free[1]) // 2]})
    engine = HFRolloutEngine(model, eos_token_id=stops, pad_token_id=PAD, max_batch_size=4)
    groups = engine.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_new_tokens=limit)
    assert len(groups) == len(prompts)
    saw_cut = False
    for p, group in zip(prompts, groups):
        ref = alone(p, stops)
        cut = next((j for j, t in enumerate(ref) if t in stops), None)
        want = ref[:cut + 1] if cut is not None else ref
        for comp in group:  # greedy: both samples equal the reference
            assert comp.token_ids == want
            assert comp.truncated is (cut is None)
        saw_cut |= cut is not None
    assert saw_cut


def test_static_cache_gives_the_same_greedy_completions():
    """The opt-in static KV cache changes speed, not results (greedy, left-padded prompts of several lengths)."""
    from prorl.models.policy import load_policy

    model, tok = load_policy(TINY)
    prompts = [list(tok(t)["input_ids"]) for t in ("What is 3+4?", "Sort ascending: 9 1 5 3 3", "Hi")]
    out = {}
    for cache in (None, "static"):
        engine = HFRolloutEngine(model, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 cache_implementation=cache)
        out[cache] = [[c.token_ids for c in g] for g in engine.generate(prompts, n=2, temperature=0.0, top_p=1.0,
                                                                         max_new_tokens=12)]
    assert out[None] == out["static"]
