"""``prorl score INPUT.jsonl [-o OUT.jsonl]``: score responses with the verifiers.

Each input line is a verl-schema row (``data_source``, ``ability``, ``reward_model.ground_truth``,
...) plus ``response``; each output line is that row plus ``score``, ``status`` and ``reason``.
Malformed lines are reported on stderr with their line number and skipped; the rest are still
scored, and the exit code is 1 if any line was malformed. Rows our infrastructure could not
score (status ``infra_error``: every reward replica unreachable, workers dying) are written with
that status and make the exit code 2: score them again.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="JSONL file of rows with a 'response' field ('-' for stdin)")
    parser.add_argument("-o", "--output", default="-", help="output JSONL (default: stdout)")
    parser.add_argument("--workers", type=int, default=2, help="verifier worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="hard limit per item, seconds (default 10)")
    parser.add_argument("--server-url", default=None,
                        help="score through running `prorl serve-rewards` replicas (comma-separated URLs)")
    parser.add_argument("--token-file", default=None,
                        help="file holding the service's bearer token (default: $PRORL_REWARD_TOKEN_FILE)")
    parser.add_argument("--max-memory-mb", type=int, default=2048,
                        help="address-space cap per local verifier worker, MB (default 2048; 0 = none)")
    parser.add_argument("--no-strip-think", action="store_true", help="verify the whole response, <think> included")
    parser.add_argument("--batch-size", type=int, default=2048, help="rows scored per batch (default 2048)")


def _check_row(row: object) -> str | None:
    """Why a parsed line cannot be scored, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    if not isinstance(row.get("response"), str):
        return "missing or non-string field 'response'"
    if not row.get("data_source") and not row.get("ability"):
        return "missing field 'data_source' (or 'ability')"
    rm = row.get("reward_model")
    has_gt = (isinstance(rm, dict) and rm.get("ground_truth") is not None) or row.get("ground_truth") is not None
    if not has_gt:
        return "missing field 'reward_model.ground_truth'"
    return None


def run(args: argparse.Namespace) -> int:
    from prorl.rewards.client import RewardServiceError
    from prorl.rewards.scorer import RewardScorer, item_from_row

    fin = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    fout = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    malformed = 0
    n = 0
    total = 0.0
    statuses: collections.Counter = collections.Counter()
    scorer = RewardScorer(num_workers=args.workers, timeout_s=args.timeout, server_url=args.server_url,
                          server_token_file=args.token_file, strip_think=not args.no_strip_think,
                          max_memory_mb=args.max_memory_mb or None)

    def flush(rows: list[dict]) -> None:
        nonlocal n, total
        if not rows:
            return
        verdicts = scorer.score([item_from_row(r) for r in rows])
        for row, v in zip(rows, verdicts):
            row.update(score=v.score, status=v.status.value, reason=v.reason)
            fout.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
            total += v.score
            statuses[v.status.value] += 1
        rows.clear()

    rows: list[dict] = []
    try:
        for lineno, line in enumerate(fin, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                malformed += 1
                print(f"{args.input}:{lineno}: bad JSON: {e}", file=sys.stderr)
                continue
            why = _check_row(row)
            if why:
                malformed += 1
                print(f"{args.input}:{lineno}: {why}", file=sys.stderr)
                continue
            rows.append(row)
            if len(rows) >= args.batch_size:
                flush(rows)
        flush(rows)
    except RewardServiceError as e:
        print(f"prorl score: {e}", file=sys.stderr)
        return 2
    finally:
        scorer.close()
        if fin is not sys.stdin:
            fin.close()
        if fout is not sys.stdout:
            fout.close()
        else:
            fout.flush()
    judged = n - statuses.get("infra_error", 0)  # an infra_error is no verdict: not in the mean
    mean = total / judged if judged else 0.0
    parts = ", ".join(f"{k}={v}" for k, v in sorted(statuses.items()))
    print(f"scored {n} rows: mean score {mean:.4f}; statuses: {parts or 'none'}; malformed lines: {malformed}",
          file=sys.stderr)
    if statuses.get("infra_error"):
        print(f"prorl score: {statuses['infra_error']} rows could not be scored (infra_error); run again",
              file=sys.stderr)
        return 2
    return 1 if malformed else 0
