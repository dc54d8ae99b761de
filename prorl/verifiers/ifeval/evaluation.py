"""IFEval data conversion and the official-style metrics.

``ifeval_to_rows`` turns IFEval's ``input_data.jsonl`` into verl-schema training/eval rows;
``evaluate_responses`` scores a ``{"prompt", "response"}`` jsonl file against it and returns
prompt-level and instruction-level accuracy in strict and loose mode, plus per-instruction
breakdowns, like the reference ``evaluation_main``.

Command line: ``python -m prorl.verifiers.ifeval INPUT_DATA RESPONSES [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from prorl.verifiers.ifeval.registry import follow_loose, follow_strict


def read_jsonl(path: str | Path) -> list[dict]:
    """All non-empty lines of a jsonl file, parsed."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ifeval_to_rows(path: str | Path) -> list[dict]:
    """verl-schema rows (one per prompt) from IFEval's ``input_data.jsonl``.

    ``reward_model.ground_truth`` holds ``{"instruction_id_list": [...], "kwargs": [...]}``
    (kwargs with null values dropped); ``extra_info`` keeps the IFEval ``key`` and an index.
    """
    rows = []
    for i, ex in enumerate(read_jsonl(path)):
        kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in ex["kwargs"]]
        rows.append({
            "data_source": "ifeval",
            "prompt": [{"role": "user", "content": ex["prompt"]}],
            "ability": "ifeval",
            "reward_model": {
                "ground_truth": {"instruction_id_list": list(ex["instruction_id_list"]), "kwargs": kwargs},
                "style": "rule",
            },
            "extra_info": {"key": ex.get("key"), "index": i, "split": "test"},
        })
    return rows


def _accuracy(results: Iterable[tuple[list[str], list[bool]]]) -> dict:
    """Prompt/instruction accuracy and per-category / per-instruction accuracy."""
    prompts = prompt_ok = inst = inst_ok = 0
    tot0: dict[str, int] = defaultdict(int)
    ok0: dict[str, int] = defaultdict(int)
    tot1: dict[str, int] = defaultdict(int)
    ok1: dict[str, int] = defaultdict(int)
    for ids, flags in results:
        prompts += 1
        prompt_ok += all(flags)
        inst += len(ids)
        inst_ok += sum(flags)
        for iid, f in zip(ids, flags):
            cat = iid.split(":")[0]
            tot0[cat] += 1
            ok0[cat] += f
            tot1[iid] += 1
            ok1[iid] += f
    return {
        "prompt_level": prompt_ok / prompts if prompts else 0.0,
        "instruction_level": inst_ok / inst if inst else 0.0,
        "prompt_correct": prompt_ok,
        "prompt_total": prompts,
        "instruction_correct": inst_ok,
        "instruction_total": inst,
        "by_category": {k: ok0[k] / tot0[k] for k in sorted(tot0)},
        "by_instruction": {k: ok1[k] / tot1[k] for k in sorted(tot1)},
    }


def evaluate_responses(input_path: str | Path, response_path: str | Path) -> dict:
    """Score a responses jsonl (``prompt``, ``response``) against IFEval ``input_data.jsonl``.

    Responses are matched to inputs by exact prompt text, as in the reference. A prompt with
    no response raises ``KeyError``. Returns ``{"strict": {...}, "loose": {...},
    "per_prompt": [...]}`` where each mode has ``prompt_level`` and ``instruction_level``
    (fractions in [0, 1]), counts and breakdowns ``by_category`` / ``by_instruction``.
    """
    inputs = read_jsonl(input_path)
    responses = {r["prompt"]: r["response"] for r in read_jsonl(response_path)}
    strict, loose, per_prompt = [], [], []
    for ex in inputs:
        if ex["prompt"] not in responses:
            raise KeyError(f"no response for IFEval prompt key={ex.get('key')}")
        resp = responses[ex["prompt"]]
        ids = ex["instruction_id_list"]
        s = follow_strict(resp, ids, ex["kwargs"])
        lo = follow_loose(resp, ids, ex["kwargs"])
        strict.append((ids, s))
        loose.append((ids, lo))
        per_prompt.append({"key": ex.get("key"), "instruction_id_list": ids, "strict": s, "loose": lo})
    return {"strict": _accuracy(strict), "loose": _accuracy(loose), "per_prompt": per_prompt}


def format_report(result: dict) -> str:
    """Human-readable report, in the spirit of the reference's printout."""
    out = []
    for mode in ("strict", "loose"):
        r = result[mode]
        out.append(f"== {mode} ==")
        out.append(f"prompt-level: {r['prompt_level']:.4f} ({r['prompt_correct']}/{r['prompt_total']})")
        out.append(f"instruction-level: {r['instruction_level']:.4f} "
                   f"({r['instruction_correct']}/{r['instruction_total']})")
        out.extend(f"  {k} {v:.4f}" for k, v in r["by_category"].items())
        out.extend(f"  {k} {v:.4f}" for k, v in r["by_instruction"].items())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="IFEval strict/loose accuracy of a responses file.")
    p.add_argument("input_data", help="IFEval input_data.jsonl")
    p.add_argument("responses", help="jsonl with 'prompt' and 'response' per line")
    p.add_argument("--json", help="also write the full result (with per-prompt flags) here")
    args = p.parse_args(argv)
    result = evaluate_responses(args.input_data, args.responses)
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
