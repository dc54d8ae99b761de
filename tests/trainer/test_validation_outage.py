"""Validation never mistakes a reward outage for a regression: ``infra_error`` samples are left
out of every validation score, counted apart, and a validation with too few scored samples is
logged but ignored by the best checkpoint, the reset triggers and rollback."""

from __future__ import annotations

import json
import socket

import pytest
from outage_testverifiers import DOMAIN, DOOMED, register

from prorl.data.dataset import Example
from prorl.rewards.scorer import RewardScorer
from prorl.rollout.base import Completion
from prorl.trainer.evaluate import evaluate, summarise_records, usable_for_watchdog, validation_metrics

register()

R, W = "\\boxed{7}", "\\boxed{3}"  # right and wrong answers to the gold "7"
# per prompt: data_source and its 4 responses; the doomed ones are lost only during the outage, and
# each prompt loses samples whose mean equals its own, so excluding them changes no prompt's mean
PROMPTS = [
    (f"{DOMAIN}/a", [R, W, R + DOOMED, W + DOOMED]),
    (f"{DOMAIN}/a", [R, R, R, R + DOOMED]),
    (f"{DOMAIN}/b", [W, W, W, W]),
    (f"{DOMAIN}/b", [R, W, W, W]),
]


class _Engine:
    """Prompt i answers PROMPTS[i]'s responses, as character codes (the tokenizer below decodes them)."""

    def generate(self, prompts, *, n, temperature, top_p, max_new_tokens):
        return [[Completion([ord(ch) for ch in text], truncated=len(text) > 12) for text in PROMPTS[p[0]][1][:n]]
                for p in prompts]


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def _examples(outage_file) -> list[Example]:
    return [Example({"data_source": ds, "ability": None, "reward_model": {"ground_truth": "7"},
                     "extra_info": {"outage": str(outage_file)}}, [i]) for i, (ds, _) in enumerate(PROMPTS)]


def test_a_worker_dying_in_validation_changes_no_mean(tmp_path):
    """The real scorer and verifier pool: during the outage the worker dies on every try of the doomed
    samples (3 deaths each, then ``infra_error``); every mean matches the healthy pass."""
    down = tmp_path / "outage"
    examples = _examples(down)
    with RewardScorer(num_workers=1, timeout_s=30) as scorer:
        healthy = evaluate(_Engine(), _Tok(), scorer, examples, n=4, temperature=1.0, top_p=1.0, max_new_tokens=32)
        down.write_text("reward workers are dying")
        outage = evaluate(_Engine(), _Tok(), scorer, examples, n=4, temperature=1.0, top_p=1.0, max_new_tokens=32)
        assert scorer.pool.stats()["infra_errors"] == 3
    a, b = f"{DOMAIN}/a", f"{DOMAIN}/b"
    assert [(outage[ds]["num_scored"], outage[ds]["infra_errors"]) for ds in (a, b, "all")] == [(5, 3), (8, 0), (13, 3)]
    assert [(healthy[ds]["num_scored"], healthy[ds]["infra_errors"]) for ds in (a, b, "all")] == [(8, 0)] * 2 + [(16, 0)]
    for ds in (a, b, "all"):
        for key in ("mean_score", "pass@1", "maj@4", "mean_response_length", "truncation_rate", "num_prompts"):
            assert outage[ds][key] == pytest.approx(healthy[ds][key]), (ds, key)
    assert healthy[a]["mean_score"] == pytest.approx(0.75) and healthy["all"]["mean_score"] == pytest.approx(0.4375)
    assert healthy[a]["mean_response_length"] > 9, "lengths count the doomed (longer) samples in both passes"
    m = validation_metrics(outage, 4)
    assert m["val-aux/infra_error"] == 3 and m[f"val-aux/{a}/infra_error"] == 3 and m[f"val-aux/{b}/infra_error"] == 0
    assert m[f"val-core/{a}/acc/mean@4"] == pytest.approx(0.75)
    assert usable_for_watchdog(healthy, 0.9)[0] and not usable_for_watchdog(outage, 0.9)[0]


def _records(scored_rows: list[list[bool]], correct_rows: list[list[bool]]) -> dict[str, list]:
    return {"scores": [[float(c) for c in row] for row in correct_rows], "correct": correct_rows,
            "scored": scored_rows, "answers": [["7" if c else "3" for c in row] for row in correct_rows],
            "lengths": [5] * sum(map(len, correct_rows)), "truncated": [False] * sum(map(len, correct_rows))}


def test_pass_at_k_uses_the_prompts_with_k_scored_samples_and_unscored_sources_have_no_score():
    rec = _records([[True, True, False, False], [True, True, True, True], [False] * 4],
                   [[True, False, False, False], [False, False, False, True], [True] * 4])
    (r,) = summarise_records([{"x": rec}], 4).values()
    assert r["num_prompts"] == 3 and r["num_scored"] == 6 and r["infra_errors"] == 6
    assert r["mean_score"] == pytest.approx((1 / 2 + 1 / 4) / 2)  # the third prompt has no scored sample
    assert r["pass@2"] == pytest.approx((1.0 + 0.5) / 2)  # 1 - C(3,2)/C(4,2) = 0.5 for the second prompt
    assert r["pass@4"] == pytest.approx(1.0)  # only the second prompt has 4 scored samples
    assert r["maj@4"] == pytest.approx(0.5)  # tie "7"/"3" -> "7" (right); "3" (wrong)
    none = summarise_records([{"y": _records([[False] * 2], [[True] * 2])}], 2)["y"]
    assert none["mean_score"] is None and none["pass@1"] is None and none["maj@2"] is None
    m = validation_metrics({"y": none}, 2)
    assert not any(k.startswith("val-core/") for k in m), "no score is logged rather than a 0"
    assert m["val-aux/infra_error"] == 2


def test_eval_table_shows_missing_scores_and_the_infra_count(capsys):
    from prorl.commands.eval import print_table

    results = summarise_records([{"x": _records([[False] * 2], [[True] * 2]),
                                  "y": _records([[True, False]], [[True, True]])}], 2)
    print_table(results)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.split()[0] == "x")
    assert "n/a" in row and row.split()[-1] == "2"
    assert "3 samples could not be scored" in out


def _result(scored: int, infra: int) -> dict:
    return {"num_scored": scored, "infra_errors": infra}


@pytest.mark.parametrize("results, min_fraction, usable, names", [
    ({"a": _result(10, 0)}, 0.9, True, []),
    ({"a": _result(9, 1)}, 0.9, True, []),  # exactly the threshold is enough
    ({"a": _result(8, 2)}, 0.9, False, ["a 8/10"]),
    ({"a": _result(7, 3)}, 0.7, True, []),
    ({"a": _result(100, 0), "b": _result(1, 1), "all": _result(101, 1)}, 0.9, False, ["b 1/2"]),  # per source
    ({"a": _result(0, 4)}, 0.0, False, ["a 0/4"]),  # a source without any score never counts
    ({"a": _result(1, 9)}, 0.0, True, []),
    ({}, 0.5, False, []),
])
def test_usable_for_watchdog(results, min_fraction, usable, names):
    ok, why = usable_for_watchdog(results, min_fraction)
    assert ok is usable and why
    for name in names:
        assert name in why
    if not ok and results:
        assert "validation.min_scored_fraction" in why


def test_min_scored_fraction_is_validated():
    from prorl.config import ConfigError, load_config

    assert load_config(None, []).validation.min_scored_fraction == 0.9
    with pytest.raises(ConfigError, match="validation.min_scored_fraction"):
        load_config(None, ["validation.min_scored_fraction=1.5"])


def _dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_training_ignores_validations_during_an_outage(tmp_path, monkeypatch):
    """The validations at steps 0 and 2 meet an unreachable reward service (every sample
    ``infra_error``): they are logged and ignored, so no ``val_degradation`` reset, no rollback, and
    the best checkpoint comes from a validation that was scored."""
    from prorl.config import load_config
    from prorl.trainer import rollouts as loop  # where the synchronous source validates
    from prorl.trainer.controller import train
    from prorl.trainer.metrics import read_metrics

    real, calls, url = loop.sample_and_score, [], _dead_url()

    def sample_and_score(engine, tok, scorer, examples, **kw):
        calls.append(len(calls))
        if len(calls) in (1, 3):  # steps 0 and 2
            with RewardScorer(server_url=url, client_retries=0, inprocess_domains=()) as unreachable:
                return real(engine, tok, unreachable, examples, **kw)
        return real(engine, tok, scorer, examples, **kw)

    monkeypatch.setattr(loop, "sample_and_score", sample_and_score)
    cfg = load_config(None, [
        "data.builtin_tasks=[sort]", "data.builtin_val_size=8", "validation.n=2", "validation.every=1",
        "validation.temperature=0", "actor.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=4",
        "trainer.tensorboard=false", "trainer.progress_bar=false", "trainer.threads=1", "trainer.max_minutes=0",
        "actor.lr=1e-6", "trainer.total_steps=3", "trainer.save_every=1", "trainer.keep_checkpoints=10",
        "reset.auto=true", "reset.triggers=[val_degradation]", "reset.val_patience=1", "reset.val_margin=0.05",
        "reset.min_steps_between_resets=1", "reset.rollback_to_best=true", f"trainer.run_dir={tmp_path}"])
    logged: list[str] = []
    train(cfg, log=lambda *a: logged.append(" ".join(map(str, a))))
    assert len(calls) == 4

    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["type"]) for e in events] == [(0, "validation_ignored"), (2, "validation_ignored")], events
    assert "0/16" in events[1]["cause"] and any("step 2 validation ignored" in line for line in logged)
    state = json.loads((tmp_path / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    assert state["resets"] == [] and state["defended"] is None
    assert len(state["blended_val_history"]) == 2, "only the validations at steps 1 and 3 count"
    assert state["best_step"] in (1, 3) and state["best_ckpt_step"] == state["best_step"]
    assert state["best_val"] > cfg.reset.val_margin, "a 0 recorded at step 2 would have fired val_degradation"
    assert not (tmp_path / "checkpoints" / "step_0").exists(), "an ignored validation does not make a best checkpoint"
    metrics = {m["step"]: m for m in read_metrics(tmp_path) if "val-aux/infra_error" in m}
    assert {s: m["val-aux/infra_error"] for s, m in metrics.items()} == {0: 16, 1: 0, 2: 16, 3: 0}
    assert "val-core/builtin/sort/acc/mean@2" not in metrics[2] and "val-core/builtin/sort/acc/mean@2" in metrics[3]
