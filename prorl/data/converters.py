"""HumanEval / MBPP files -> verl-schema rows scored by ``prorl.verifiers.code``.

Row: ``data_source``, ``prompt`` (one user message asking for a fenced Python block),
``ability`` = "code", ``reward_model`` = ``{"ground_truth": <JSON string>, "style": "rule"}``,
``extra_info`` (task id, split, index, entry point, the reference solution for sanity checks).
The ground truth is stored as a JSON *string* so that parquet keeps one column type for every
code dataset (the verifier accepts a dict or a JSON string).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function (including the "
    "signature and any imports it needs) in a single ```python code block.\n\n"
)
MBPP_INSTRUCTION = (
    "{prompt}\n\nYour code should pass tests like this:\n{example}\n\n"
    "Write the Python function in a single ```python code block."
)


def _mbpp_split(task_id: int) -> str:
    """The official MBPP split by task id."""
    if 1 <= task_id <= 10:
        return "prompt"
    if 11 <= task_id <= 510:
        return "test"
    if 511 <= task_id <= 600:
        return "validation"
    return "train"


def humaneval_to_rows(path: str | Path) -> list[dict]:
    """``HumanEval.jsonl`` -> rows with HumanEval-style ground truth (test, entry_point, prompt)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(x for x in f if x.strip()):
            r = json.loads(line)
            gt = {"test": r["test"], "entry_point": r["entry_point"], "prompt": r["prompt"]}
            rows.append({
                "data_source": "humaneval",
                "prompt": [{"role": "user",
                            "content": HUMANEVAL_INSTRUCTION + "```python\n" + r["prompt"]
                            + "```"}],
                "ability": "code",
                "reward_model": {"ground_truth": json.dumps(gt), "style": "rule"},
                "extra_info": {"task_id": r["task_id"], "split": "test", "index": index,
                               "entry_point": r["entry_point"],
                               "reference": r["prompt"] + r["canonical_solution"]},
            })
    return rows


def _defined_names(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _used_names(tests: list[str]) -> set[str]:
    out: set[str] = set()
    for t in tests:
        try:
            out |= {n.id for n in ast.walk(ast.parse(t)) if isinstance(n, ast.Name)}
        except SyntaxError:
            continue
    return out


def _mbpp_records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in text.splitlines() if x.strip()]
    data = json.loads(text)
    return data if isinstance(data, list) else list(data.values())


def mbpp_to_rows(path: str | Path) -> list[dict]:
    """``sanitized-mbpp.json`` (or the full ``mbpp.jsonl``) -> rows with MBPP-style ground truth.

    ``entry_points`` lists the reference solution's top-level names that the tests call, so that
    a solution function shadowing a builtin (task 126 defines ``sum``) is still proxied.
    """
    rows = []
    for index, r in enumerate(_mbpp_records(Path(path))):
        prompt_text = r.get("prompt") or r.get("text") or ""
        tests = list(r["test_list"])
        entry = sorted(_defined_names(r["code"]) & _used_names(tests))
        gt: dict[str, Any] = {"test_list": tests, "test_imports": list(r.get("test_imports") or []),
                              "entry_points": entry}
        if r.get("test_setup_code"):
            gt["test_setup_code"] = r["test_setup_code"]
        task_id = int(r["task_id"])
        rows.append({
            "data_source": "mbpp",
            "prompt": [{"role": "user",
                        "content": MBPP_INSTRUCTION.format(prompt=prompt_text.strip(),
                                                           example=tests[0] if tests else "")}],
            "ability": "code",
            "reward_model": {"ground_truth": json.dumps(gt), "style": "rule"},
            "extra_info": {"task_id": task_id, "split": _mbpp_split(task_id), "index": index,
                           "entry_points": entry, "reference": r["code"]},
        })
    return rows


def write_rows(rows: list[dict], path: str | Path) -> Path:
    """Write rows as JSONL (``.jsonl``), a JSON array (``.json``) or parquet (``.parquet``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif path.suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        raise ValueError(f"unsupported extension {path.suffix!r} (use .jsonl or .parquet)")
    return path
