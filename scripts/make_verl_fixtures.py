"""Write ``tests/algo/fixtures/verl_reference.json``: verl's outputs on fixed inputs, which
``tests/algo/test_verl_reference.py`` recomputes with prorl's functions.

Run by hand, never by the tests; no verl code enters this repository. verl comes either from a
source tree (``--verl-src DIR``, the directory holding ``verl/``: e.g. ``git archive`` of a commit
of github.com/volcengine/verl), or from an installed ``verl`` (without ``--verl-src``; e.g.
``pip install --no-deps verl==0.9.1``; then the version names it, the commit is null)::

    python scripts/make_verl_fixtures.py --verl-src /tmp/verl-src --verl-commit <sha>

Only ``verl.trainer.ppo.core_algos`` and ``verl.utils.torch_functional`` are called (pure tensor
functions). Either way the import skips ``verl/__init__.py`` and stands in for ``ray``
and ``verl.utils.model`` (transformers model helpers), which the import chain names but these
functions never use; besides torch and transformers the import needs omegaconf, tensordict (with
pyvers, importlib_metadata) and codetiming, e.g. in a scratch venv: ``pip install --no-deps ...``.
The inputs are rounded and stored next to the outputs, so the test never regenerates them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "algo" / "fixtures" / "verl_reference.json"
EPS_LOW, EPS_HIGH = 0.2, 0.28  # verl's clip_ratio_low / clip_ratio_high (DAPO's clip-higher values)
CLIP_RATIO_C = [3.0, 10.0, None]  # verl's default, its DAPO recipes' value, and off (verl: inf)
MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
STUBBED = {"ray", "verl.utils.model"}


class _Stub(types.ModuleType):
    """A module whose every attribute is a MagicMock (for imports the called functions never use)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return mock.MagicMock(name=f"{self.__name__}.{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name in STUBBED or name.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def import_verl(src: Path | None) -> tuple[Any, Any, str]:
    """(core_algos, torch_functional, version) from the source tree ``src``, else from the installed
    verl; either way without running ``verl/__init__.py`` (ray, DataProto) and with the stubs."""
    if src is None:
        spec = importlib.util.find_spec("verl")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("no installed verl: pip install --no-deps verl==VERSION, or give --verl-src")
        src = Path(list(spec.submodule_search_locations)[0]).parent
    root = src / "verl"
    sys.meta_path.insert(0, _StubFinder())
    package = types.ModuleType("verl")
    package.__path__ = [str(root)]
    sys.modules["verl"] = package
    core = importlib.import_module("verl.trainer.ppo.core_algos")
    return core, importlib.import_module("verl.utils.torch_functional"), (root / "version" / "version").read_text().strip()


def git_commit(src: Path | None) -> str | None:
    if src is None:
        return None
    r = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def rounded(x: torch.Tensor, digits: int = 4) -> torch.Tensor:
    return torch.round(x * 10**digits) / 10**digits


def tolist(x: torch.Tensor | float) -> Any:
    return x.tolist() if isinstance(x, torch.Tensor) else float(x)


def compact_json(obj: Any) -> str:
    """Indented JSON with every innermost list of numbers on one line."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s*([-+.\deE,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text)


def policy_loss_inputs() -> dict[str, torch.Tensor]:
    """B=6, T=7: ragged lengths (one empty row), advantages of both signs and 0, log-ratios that hit
    the lower and upper clip, the dual clip at c = 3 and at c = 10, and the +-20 clamp."""
    g = torch.Generator().manual_seed(19)
    B, T = 6, 7
    logp = rounded(-torch.rand(B, T, generator=g, dtype=torch.float64) * 3 - 0.05)  # real log-probs: < 0
    log_ratio = torch.randn(B, T, generator=g, dtype=torch.float64) * 0.8
    # A < 0 rows 1, 2: ratios e^5 (dual clip at 3 and 10), e^1.5 (at 3 only), e^-1 (lower clip), and
    # the -20 clamp of the log-ratio; A > 0 row 0: upper clip, below 1 - eps_low, and the +20 clamp
    log_ratio[1, :4] = torch.tensor([5.0, 1.5, -1.0, -25.0], dtype=torch.float64)
    log_ratio[2, 2:5] = torch.tensor([2.5, 1.2, -0.5], dtype=torch.float64)
    log_ratio[0, 1:4] = torch.tensor([1.0, -1.5, 25.0], dtype=torch.float64)
    logp[1, 3] -= 25.0  # a very unlikely token now, so that old_log_prob stays a log-prob
    old = rounded((logp - log_ratio).clamp(max=-0.01))
    lengths = torch.tensor([7, 5, 7, 3, 6, 0])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.float64)
    adv = torch.tensor([1.3, -0.7, -2.0, 0.0, 0.4, -1.1], dtype=torch.float64)  # [B]
    weights = rounded(0.3 + 1.7 * torch.rand(B, T, generator=g, dtype=torch.float64))
    return {"old_log_prob": old, "log_prob": logp, "advantages": adv, "response_mask": mask, "rollout_is_weights": weights}


def make_policy_loss_cases(core: Any, inp: dict[str, torch.Tensor]) -> list[dict]:
    from verl.workers.config import ActorConfig

    adv_bt = inp["advantages"][:, None] * inp["response_mask"]  # verl's [B, T] advantages
    cases = []
    for mode in MODES:
        for c in CLIP_RATIO_C:
            for weighted in (False, True):
                cfg = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=EPS_LOW,
                                  clip_ratio_low=EPS_LOW, clip_ratio_high=EPS_HIGH,
                                  clip_ratio_c=math.inf if c is None else c, loss_agg_mode=mode)
                loss, metrics = core.compute_policy_loss_vanilla(
                    inp["old_log_prob"], inp["log_prob"], adv_bt, inp["response_mask"], loss_agg_mode=mode, config=cfg,
                    rollout_is_weights=inp["rollout_is_weights"] if weighted else None)
                cases.append({"loss_agg_mode": mode, "clip_ratio_c": c, "rollout_is_weights": weighted,
                              "pg_loss": loss.item(), **{k.split("/")[1]: v for k, v in metrics.items()}})
    return cases


CLIP_COV = [  # (clip_cov_ratio, clip_cov_lb, clip_cov_ub, torch seed of verl's randperm)
    (2e-4, 1.0, 5.0, 0),  # verl's defaults: one token of the 34
    (0.1, 1.0, 5.0, 1), (0.1, 1.0, 5.0, 2),  # 3 drawn at random among more candidates
    (0.1, 0.3, 2.0, 3),  # another window
    (1.0, 1.0, 5.0, 4),  # a budget above the candidates: all cut, no draw
]
KL_COV = [(2e-4, 0.1), (0.1, 1.0), (0.3, 0.1)]  # (kl_cov_ratio, ppo_kl_coef); verl's defaults first


def cov_loss_inputs() -> dict[str, torch.Tensor]:
    """B=6, T=7 for Clip-Cov / KL-Cov: log-ratios within +-1.5 (no +-20 clamp: KL-Cov has no clip,
    so a clamped ratio would differ), advantages of both signs and 0, ragged lengths with an empty
    row, and covariances spread over the windows (some of the in-window tokens PPO-clipped)."""
    g = torch.Generator().manual_seed(23)
    B, T = 6, 7
    logp = rounded(-torch.rand(B, T, generator=g, dtype=torch.float64) * 4 - 0.05)
    log_ratio = (torch.rand(B, T, generator=g, dtype=torch.float64) * 3 - 1.5) * 0.5
    log_ratio[0, :3] = torch.tensor([0.6, -0.4, 0.1], dtype=torch.float64)
    old = rounded(logp - log_ratio)
    lengths = torch.tensor([7, 6, 7, 4, 0, 7])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.float64)
    adv = torch.tensor([1.8, -1.2, 0.7, 0.0, 0.9, -2.1], dtype=torch.float64)
    weights = rounded(0.3 + 1.7 * torch.rand(B, T, generator=g, dtype=torch.float64))
    return {"old_log_prob": old, "log_prob": logp, "advantages": adv, "response_mask": mask, "rollout_is_weights": weights}


def make_cov_cases(core: Any, inp: dict[str, torch.Tensor]) -> dict:
    """verl's compute_policy_loss_clip_cov / _kl_cov on the same inputs, every aggregation mode,
    with and without rollout_is_weights; clip_cov after ``torch.manual_seed(seed)`` (its randperm
    draws from torch's global generator, so prorl matches it with a generator seeded the same)."""
    from verl.workers.config import ActorConfig, PolicyLossConfig

    adv_bt = inp["advantages"][:, None] * inp["response_mask"]
    clip_cov, kl_cov = [], []
    for mode in MODES:
        for weighted in (False, True):
            w = inp["rollout_is_weights"] if weighted else None
            for ratio, lb, ub, seed in CLIP_COV:
                cfg = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=EPS_LOW,
                                  clip_ratio_low=EPS_LOW, clip_ratio_high=EPS_HIGH, loss_agg_mode=mode,
                                  policy_loss=PolicyLossConfig(loss_mode="clip_cov", clip_cov_ratio=ratio, clip_cov_lb=lb,
                                                               clip_cov_ub=ub))
                torch.manual_seed(seed)
                loss, metrics = core.compute_policy_loss_clip_cov(inp["old_log_prob"], inp["log_prob"], adv_bt,
                                                                  inp["response_mask"], loss_agg_mode=mode, config=cfg,
                                                                  rollout_is_weights=w)
                clip_cov.append({"loss_agg_mode": mode, "rollout_is_weights": weighted, "clip_cov_ratio": ratio,
                                 "clip_cov_lb": lb, "clip_cov_ub": ub, "seed": seed, "pg_loss": loss.item(),
                                 **{k.split("/")[1]: v for k, v in metrics.items()}})
            for ratio, coef in KL_COV:
                cfg = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=EPS_LOW,
                                  loss_agg_mode=mode, policy_loss=PolicyLossConfig(loss_mode="kl_cov", kl_cov_ratio=ratio,
                                                                                   ppo_kl_coef=coef))
                loss, metrics = core.compute_policy_loss_kl_cov(inp["old_log_prob"], inp["log_prob"], adv_bt,
                                                                inp["response_mask"], loss_agg_mode=mode, config=cfg,
                                                                rollout_is_weights=w)
                kl_cov.append({"loss_agg_mode": mode, "rollout_is_weights": weighted, "kl_cov_ratio": ratio,
                               "ppo_kl_coef": coef, "pg_loss": loss.item(), **{k.split("/")[1]: v for k, v in metrics.items()}})
    return {"functions": "compute_policy_loss_clip_cov, compute_policy_loss_kl_cov", "eps_low": EPS_LOW,
            "eps_high": EPS_HIGH, "inputs": {k: v.tolist() for k, v in inp.items()}, "clip_cov": clip_cov, "kl_cov": kl_cov}


def make_grpo(core: Any) -> dict:
    """Three groups of 4 (binary, continuous, all equal), shuffled ids; and a batch with a singleton group."""
    scores = torch.tensor([1.0, 0.5, 0.0, 1.0, 0.2, 1.0, 0.9, 0.0, 1.0, 0.1, 1.0, 1.0], dtype=torch.float32)
    index = [7, 3, 7, 9, 3, 7, 3, 7, 9, 3, 9, 9]
    single_scores, single_index = torch.tensor([1.0, 0.0, 0.7]), [0, 0, 1]

    def run(s: torch.Tensor, idx: list[int], norm: bool) -> list[float]:
        rewards = torch.zeros(len(s), 3)
        rewards[:, -1] = s  # the outcome reward on the last response token
        adv, _ = core.compute_grpo_outcome_advantage(rewards, torch.ones(len(s), 3), np.array(idx), epsilon=1e-6,
                                                     norm_adv_by_std_in_grpo=norm)
        assert torch.equal(adv[:, 0], adv[:, -1])
        return adv[:, 0].tolist()

    return {"inputs": {"scores": scores.tolist(), "index": index}, "epsilon": 1e-6,
            "cases": [{"norm_adv_by_std": n, "advantages": run(scores, index, n)} for n in (True, False)],
            "singleton_group": {"scores": single_scores.tolist(), "index": single_index,
                                "advantages": run(single_scores, single_index, True)}}


def make_agg_loss(core: Any, mask: torch.Tensor) -> dict:
    g = torch.Generator().manual_seed(5)
    loss_mat = rounded(torch.randn(*mask.shape, generator=g, dtype=torch.float64) * 2)
    return {"inputs": {"loss_mat": loss_mat.tolist(), "loss_mask": mask.tolist()},
            "cases": [{"loss_agg_mode": m, "loss": core.agg_loss(loss_mat, mask, m).item()} for m in MODES]}


def make_kl(core: Any) -> dict:
    """Differences from -25 to 25: k3's +-20 clamp of the log-ratio and its cap at 10 are hit."""
    g = torch.Generator().manual_seed(7)
    logp = rounded(-torch.rand(4, 6, generator=g, dtype=torch.float64) * 4)
    diff = torch.randn(4, 6, generator=g, dtype=torch.float64)  # logp - ref
    diff[0, :6] = torch.tensor([-25.0, -6.0, -2.5, 0.0, 2.5, 25.0], dtype=torch.float64)
    ref = rounded(logp - diff)
    names = [("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3")]
    return {"inputs": {"logprob": logp.tolist(), "ref_logprob": ref.tolist()},
            "cases": [{"verl_kl_penalty": v, "prorl_estimator": p, "kl": core.kl_penalty(logp, ref, v).tolist()}
                      for v, p in names]}


def make_entropy(core: Any, vf: Any) -> dict:
    g = torch.Generator().manual_seed(11)
    logits = rounded(torch.randn(3, 4, 9, generator=g, dtype=torch.float64) * 3)
    labels = torch.randint(0, 9, (3, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    return {"inputs": {"logits": logits.tolist(), "labels": labels.tolist(), "response_mask": mask.tolist()},
            "entropy": vf.entropy_from_logits(logits).tolist(),
            "entropy_loss_token_mean": core.compute_entropy_loss(logits, mask, "token-mean").item(),
            "logprobs": vf.logprobs_from_logits(logits, labels).tolist()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verl-src", type=Path, help="directory holding verl/ (default: the installed verl)")
    ap.add_argument("--verl-commit", help="commit of the source tree (default: git rev-parse HEAD in --verl-src)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    core, vf, version = import_verl(args.verl_src)
    commit = args.verl_commit or git_commit(args.verl_src)
    if commit is None and args.verl_src is not None:
        ap.error("--verl-commit is required when --verl-src is not a git checkout")  # an install: its version
    inp = policy_loss_inputs()
    cases = make_policy_loss_cases(core, inp)
    c3 = next(c for c in cases if c["clip_ratio_c"] == 3.0)
    assert c3["pg_clipfrac_lower"] > 0 and c3["pg_clipfrac"] > 0, "the inputs must hit the clip and the dual clip"
    fixture = {
        "about": "verl's outputs on fixed inputs, written by scripts/make_verl_fixtures.py; "
                 "tests/algo/test_verl_reference.py recomputes them with prorl",
        "verl": {"repository": "https://github.com/volcengine/verl", "commit": commit, "version": version,
                 "module": "verl/trainer/ppo/core_algos.py"},
        "torch": torch.__version__, "dtype": "float64 (grpo: float32)",
        "policy_loss": {"function": "compute_policy_loss_vanilla", "eps_low": EPS_LOW, "eps_high": EPS_HIGH,
                        "note": "clip_ratio_c null: prorl's none, run in verl as clip_ratio_c = inf",
                        "inputs": {k: v.tolist() for k, v in inp.items()}, "cases": cases},
        "cov_losses": make_cov_cases(core, cov_loss_inputs()),
        "grpo": {"function": "compute_grpo_outcome_advantage", **make_grpo(core)},
        "agg_loss": {"function": "agg_loss", **make_agg_loss(core, inp["response_mask"])},
        "kl_penalty": {"function": "kl_penalty", **make_kl(core)},
        "entropy": {"function": "verl.utils.torch_functional.entropy_from_logits / logprobs_from_logits, "
                                "core_algos.compute_entropy_loss", **make_entropy(core, vf)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(compact_json(fixture) + "\n")
    print(f"wrote {args.out} (verl {version} at {commit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
