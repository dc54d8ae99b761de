"""Prompt retirement in PromptSampler (ScaleRL's "no positive resampling"): which prompts retire,
that the remaining stream is the old one minus the retired prompts, and exact resumption."""

from __future__ import annotations

import json
import random

import pytest

from prorl.data.dataset import AllPromptsRetired, DataError, Example, PromptSampler
from sampler_examples import examples, ids


def test_records_without_retirement_do_not_change_the_stream():
    ex = examples({"a": 7, "b": 5})
    for weights in (None, {"a": 1.0, "b": 2.0}):
        plain = PromptSampler(ex, seed=4, weights=weights)
        recorded = PromptSampler(ex, seed=4, weights=weights)  # retire_pass_rate 0: off
        drawn_plain, drawn_rec = [], []
        for _ in range(10):
            drawn_plain += ids(plain.take(5))
            batch = recorded.take(5)
            drawn_rec += ids(batch)
            for e in batch:
                assert recorded.record(e, [1.0] * 16) is False  # always right, never retired
        assert drawn_plain == drawn_rec
        assert recorded.metrics() == {"data/retired_prompts": 0, "data/active_prompts": 12}


def test_retires_at_the_pass_rate_after_min_samples():
    ex = examples({"a": 5})
    s = PromptSampler(ex, seed=0, retire_pass_rate=0.75, retire_min_samples=4)
    assert s.record(ex[0], [1.0, 1.0]) is False  # 2/2 but only 2 samples
    assert s.record(ex[0], [1.0, 0.0]) is True  # 3/4 = .75 >= .75 after 4 samples
    assert s.record(1, [1.0, 1.0, 0.0, 0.0]) is False  # 2/4 = .5 (by index)
    assert s.record(2, [0.0] * 4) is False
    assert s.record(2, [1.0] * 4) is False  # running rate 4/8 = .5: the history counts
    assert s.record(3, [1.0, 1.0, 0.99, 0.99]) is False  # a pass is a full score: 2/4 ...
    assert s.record(3, [1.0, 1.0, 1.0, 1.0]) is True  # ... then 6/8 = .75
    assert s.pass_rate(3) == pytest.approx(0.75) and s.pass_rate(4) is None
    assert s.metrics() == {"data/retired_prompts": 2, "data/active_prompts": 3}
    assert sorted(ids(s.take(30))) == sorted([1, 2, 4] * 10)  # retired prompts are never drawn again


def test_remaining_stream_is_the_old_one_minus_the_retired():
    ex = examples({"a": 9, "b": 4})
    for weights in (None, {"a": 2.0, "b": 1.0}):
        plain = PromptSampler(ex, seed=11, weights=weights)
        ret = PromptSampler(ex, seed=11, weights=weights, retire_pass_rate=0.9, retire_min_samples=1)
        ret.record(3, [1.0])
        ret.record(10, [1.0])
        assert ret.retired == {3, 10}
        if weights is None:  # same permutations, skipping the retired ones
            want = [i for i in ids(plain.take(60)) if i not in (3, 10)]
            assert ids(ret.take(len(want))) == want
        else:  # the source picked at each draw is unchanged (no source is exhausted); within a
            # source, its stream minus the retired prompts
            got, base = ret.take(40), plain.take(80)
            assert [e.data_source for e in got] == [e.data_source for e in base[:40]]
            for src in ("a", "b"):
                mine = [i for i, e in zip(ids(got), got) if e.data_source == src]
                want = [i for i, e in zip(ids(base), base) if e.data_source == src and i not in (3, 10)]
                assert mine == want[:len(mine)] and len(mine) > 5


def test_exhausted_source_leaves_the_weighted_pick_and_all_retired_is_an_error():
    ex = examples({"a": 3, "b": 3})
    s = PromptSampler(ex, seed=0, weights={"a": 1.0, "b": 1.0}, retire_pass_rate=0.5, retire_min_samples=2)
    for i in (0, 1, 2):  # every "a" prompt retires
        s.record(i, [1.0, 0.0])
    assert {e.data_source for e in s.take(20)} == {"b"}
    for i in (3, 4, 5):
        s.record(i, [1.0, 1.0])
    with pytest.raises(AllPromptsRetired, match="retired"):
        s.next()
    u = PromptSampler(examples({"a": 2}), seed=0, retire_pass_rate=1.0, retire_min_samples=1)
    u.record(0, [1.0]), u.record(1, [1.0])
    with pytest.raises(AllPromptsRetired):
        u.take(1)
    assert issubclass(AllPromptsRetired, DataError)


def _drive(s: PromptSampler, rng: random.Random, rounds: int) -> list[int]:
    """Draw batches and record scores from a seeded stream (a stand-in for training)."""
    out = []
    for _ in range(rounds):
        batch = s.take(3)
        out += ids(batch)
        for e in batch:
            s.record(e, [float(rng.random() < 0.3 + 0.1 * (e.row["i"] % 7)) for _ in range(4)])
    return out


@pytest.mark.parametrize("weights", [None, {"a": 1.0, "b": 3.0}])
@pytest.mark.parametrize("k", [0, 2, 7])
def test_resume_with_retirement_is_exact(weights, k):
    ex = examples({"a": 8, "b": 10})
    kw = dict(seed=5, weights=weights, retire_pass_rate=0.75, retire_min_samples=8)
    original = PromptSampler(ex, **kw)
    rng = random.Random(0)
    _drive(original, rng, k)
    state = json.loads(json.dumps(original.state_dict()))  # what a checkpoint stores
    rng_state = rng.getstate()
    resumed = PromptSampler(ex, **kw)
    resumed.load_state_dict(state)
    rng2 = random.Random()
    rng2.setstate(rng_state)
    assert _drive(resumed, rng2, 8) == _drive(original, rng, 8)
    assert resumed.retired == original.retired and resumed.stats == original.stats
    assert original.retired  # the scenario does retire prompts


def test_state_dict_is_a_snapshot_and_old_states_load():
    ex = examples({"a": 4})
    s = PromptSampler(ex, seed=0, retire_pass_rate=0.5, retire_min_samples=2)
    s.record(0, [1.0])
    state = s.state_dict()
    s.record(0, [1.0])  # retires 0 after the snapshot
    assert state["retire_stats"] == {"0": [1, 1]} and state["retired"] == []
    old = {"epoch": {"*": 1}, "pos": {"*": 2}, "draws": 6}  # a checkpoint from before retirement existed
    t = PromptSampler(ex, seed=0, retire_pass_rate=0.5, retire_min_samples=2)
    t.load_state_dict(old)
    assert t.retired == set() and t.stats == {} and t.draws == 6
    assert PromptSampler(ex, seed=0).state_dict().keys() == {"epoch", "pos", "draws"}  # unchanged without records


def test_load_state_rejects_another_dataset_and_applies_a_stricter_setting():
    ex = examples({"a": 4})
    with pytest.raises(DataError, match="not this dataset"):
        PromptSampler(ex, seed=0).load_state_dict({"epoch": {}, "pos": {}, "draws": 0, "retire_stats": {"9": [1, 1]},
                                                   "retired": []})
    s = PromptSampler(ex, seed=0)  # retirement off when the history was recorded
    s.record(1, [1.0] * 4)
    s.record(2, [1.0, 0.0, 0.0, 0.0])
    assert s.retired == set()
    s.set_retirement(0.9, 4)  # e.g. a stage turns it on: the recorded history counts
    assert s.retired == {1}
    t = PromptSampler(ex, seed=0, retire_pass_rate=0.25, retire_min_samples=4)
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t.retired == {1, 2}


def test_record_needs_a_prompt_of_this_sampler():
    ex = examples({"a": 3})
    s = PromptSampler(ex, seed=0, retire_pass_rate=0.9)
    with pytest.raises(DataError, match="drawn from this sampler"):
        s.record(Example({"data_source": "a", "i": 0}, [0]), [1.0])
    with pytest.raises(DataError, match="out of range"):
        s.record(3, [1.0])
    with pytest.raises(DataError, match="retire"):
        s.set_retirement(1.5, 4)


def test_retirement_is_permanent_across_a_resume_with_a_laxer_setting():
    ex = examples({"a": 4})
    s = PromptSampler(ex, seed=0, retire_pass_rate=0.5, retire_min_samples=2)
    s.record(0, [1.0, 0.0])  # .5: retired under 0.5
    t = PromptSampler(ex, seed=0, retire_pass_rate=0.9, retire_min_samples=2)  # a later stage raised the bar
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t.retired == {0} and 0 not in ids(t.take(12))
    t.set_retirement(1.0, 8)
    assert t.retired == {0}
