"""`prorl sft`: the warm-start builder and fine-tuning on rows with a `response`."""

from __future__ import annotations

import json

from prorl.cli import main
from prorl.models.policy import load_policy


def test_sft_builtin_builds_a_loadable_model_and_lowers_the_loss(tmp_path):
    from prorl.trainer.sft import build_builtin_warmstart, encode_pairs, sft

    out = build_builtin_warmstart(tmp_path / "ws", steps=3, size_per_task=50, progress=False)
    model, tok = load_policy(out)
    assert tok.eos_token == "<|im_end|>" and model.config.vocab_size == len(tok)
    pairs = encode_pairs(tok, [([{"role": "user", "content": "What is 1+2?"}], "\\boxed{3}")] * 4)
    losses = sft(model, tok, pairs, steps=30, batch_size=4, lr=3e-3, warmup=1, progress=False)
    assert losses[-1] < 0.5 * losses[0]


def test_sft_command_on_rows_with_responses(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({
        "data_source": "builtin/add", "ability": "builtin", "prompt": [{"role": "user", "content": f"What is {i}+1?"}],
        "reward_model": {"ground_truth": str(i + 1)}, "response": f"\\boxed{{{i + 1}}}"}) for i in range(8)))
    out = tmp_path / "out"
    assert main(["sft", "--model", "builtin:tiny", "--data", str(rows), "-o", str(out), "--steps", "2",
                 "--batch-size", "4", "--lr", "1e-4"]) == 0
    load_policy(out)
    assert "model written" in capsys.readouterr().out


def test_sft_builtin_on_chain_levels_is_reproducible(tmp_path, capsys):
    args = ["sft", "--builtin", "--tasks", "chain2", "chain3", "--steps", "3", "--batch-size", "8",
            "--size-per-task", "40", "--correct-prob", "0.45", "--threads", "1"]
    assert main(args + ["-o", str(tmp_path / "a")]) == 0
    assert main(args + ["-o", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    model, tok = load_policy(tmp_path / "a")
    assert tok.tokenize("Count up from") == ["Count", "Ġup", "Ġfrom"]  # the tokenizer learned the chain text
    assert main(["sft", "--builtin", "--tasks", "chain1", "-o", str(tmp_path / "c")]) == 2
    assert "unknown built-in task" in capsys.readouterr().out
