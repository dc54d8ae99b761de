"""prorl vs TRL's GRPOTrainer on one identical setting, both arms in one command (issue 8, section 3).

The setting (built once and cached under ``benchmarks/.vs_trl/``): a random-init Qwen2 (hidden 256,
intermediate 688, 4 layers, 4 heads, 4 KV heads) with a byte-level BPE tokenizer of vocabulary 512
trained with ``tokenizers`` on arithmetic text; arithmetic prompts in verl's schema; 8 prompts x 16
samples per step, at most 128 new tokens, temperature 1.2, KL beta 1e-4 (k3, so a reference model on
both sides), clip 0.2 / 0.4, token-level ("dapo") loss, one optimizer update per step, no dynamic
sampling, 2 torch threads per arm. Both arms score with the same function, prorl's built-in verifier
(exact match of the last ``\\boxed{}``).

TRL runs in its own venv (``--trl-venv``, created on first use with the CPU torch 2.13.0 and the pinned
TRL / transformers below): TRL is never a prorl dependency. Each arm is a fresh subprocess. By default
(``--interleave step``) both are alive but never compute at once: the driver lets TRL run one step,
then prorl one step, and so on (alternating which goes first), so load from other processes on a
shared machine hits both arms alike; ``--interleave run`` runs whole runs in turn instead. Reported:
seconds per step (median of steps 2..N, pooled over ``--rounds``), generated tokens per step and per
second, prorl's phases (``timing_s/*`` of its ``metrics.jsonl``), TRL's generate and no-grad
log-prob time (timed by wrappers), and the ratio TRL / prorl.

Precision (``--precision``): ``fp32`` (the default) computes everything in float32 on both sides
(TRL ``bf16=False``; prorl ``model.autocast=none rollout.dtype=float32``); ``bf16`` is mixed precision
with float32 weights and optimizer on both sides: TRL's own default ``bf16=True`` (autocast in its
training forward), prorl ``model.autocast=bfloat16`` plus bf16 rollouts (``rollout.dtype=bfloat16``:
the engine's copy of the weights is bf16, as vLLM runs on GPUs); ``default`` leaves each side on its
own default (TRL ``bf16=True``; prorl ``auto``: bf16 where this CPU multiplies bf16 natively, AMX or
AVX512-BF16, else fp32). With ``--prorl-plain`` and ``--precision default`` both arms run exactly as
a user gets them. ``--prorl-set`` adds dotted overrides to prorl's arm only, to measure one change at a time.

prorl's arm runs with its speed settings (:data:`PRORL_FAST`: per-layer ``torch.compile``, eager
attention that inductor fuses, the padding-free update, and vLLM's compiled graphs); ``--prorl-plain``
runs it on its defaults instead. None of them changes what is computed, only how: the same tokens,
losses and precision. TRL runs on its defaults (no ``torch_compile``). Compilation happens in step 1,
which the medians skip (its time is printed).

Usage::

    python benchmarks/vs_trl.py [--steps 8] [--rounds 1] [--interleave step|run] [--engine hf|vllm]
                                [--precision fp32|bf16|default] [--prorl-set KEY=VALUE ...]
                                [--prorl-python PY] [--trl-venv DIR] [--quick] [--only prorl|trl] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".vs_trl"
DEFAULT_TRL_VENV = ROOT / "benchmarks" / ".venv-trl"
TRL_VERSION = "1.16.0"
TRANSFORMERS_VERSION = "5.24.0"  # what prorl's venv runs; TRL 1.16.0 needs >= 4.56.2
TORCH_VERSION = "2.13.0"
TORCH_WHEEL_DIR = Path("/opt/wheels")  # the CPU build on this machine's disk (pip's find-links too)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
PRORL_PHASES = ("gen", "reward", "old_log_prob", "update_actor", "weight_sync")
# prorl's speed settings for this setting (see the module docstring); measured one at a time in the README
PRORL_FAST = ("actor.compile=true", "model.attn_implementation=eager", "actor.max_tokens_per_micro_batch=65536")
PRORL_FAST_VLLM = ("rollout.enforce_eager=false",)
# --precision: prorl's overrides (``default``: none, prorl's ``auto``) and whether TRL runs with bf16=True
PRECISION_OVERRIDES = {"fp32": ("model.autocast=none", "rollout.dtype=float32"),
                       "bf16": ("model.autocast=bfloat16", "rollout.dtype=bfloat16"), "default": ()}
TRL_BF16 = {"fp32": False, "bf16": True, "default": True}  # TRL's GRPOConfig default is bf16=True


class Gate:
    """A worker's side of the lockstep protocol: before each step it says ``ready`` and waits for
    ``go``; after the step it says ``done``. Without file descriptors it never waits."""

    def __init__(self, go_fd: int | None = None, done_fd: int | None = None):
        self._go = os.fdopen(go_fd, "r") if go_fd is not None else None
        self._done = os.fdopen(done_fd, "w") if done_fd is not None else None

    def wait_go(self) -> None:
        if self._go is not None:
            self._done.write("ready\n")
            self._done.flush()
            if self._go.readline().strip() != "go":
                raise SystemExit("vs_trl: the driver went away")

    def done(self) -> None:
        if self._done is not None:
            self._done.write("done\n")
            self._done.flush()


@dataclass(frozen=True)
class Setting:
    """Everything both arms share."""

    hidden: int = 256
    intermediate: int = 688
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    vocab: int = 512
    prompts_per_step: int = 8
    n: int = 16
    max_new_tokens: int = 128
    temperature: float = 1.2
    beta: float = 1e-4
    eps_low: float = 0.2
    eps_high: float = 0.4
    lr: float = 1e-5
    threads: int = 2
    num_prompts: int = 512
    seed: int = 0

    @classmethod
    def quick(cls) -> "Setting":
        """A tiny smoke-test setting (seconds per step, not a measurement)."""
        return cls(hidden=64, intermediate=172, layers=2, heads=2, kv_heads=2, prompts_per_step=2, n=4,
                   max_new_tokens=16, num_prompts=64)

    def asset_key(self) -> str:
        parts = (self.hidden, self.intermediate, self.layers, self.heads, self.kv_heads, self.vocab,
                 self.num_prompts, self.seed)
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def arithmetic_rows(count: int, seed: int) -> list[dict]:
    """verl-schema rows "What is a+b? Put the final answer in \\boxed{}." (scored by the built-in verifier)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append({"data_source": "builtin/add", "ability": "builtin",
                     "prompt": [{"role": "user", "content": f"What is {a}+{b}? Put the final answer in \\boxed{{}}."}],
                     "reward_model": {"ground_truth": str(a + b), "style": "rule"},
                     "extra_info": {"split": "train", "index": i}})
    return rows


def _tokenizer_corpus(seed: int, size: int = 4000) -> list[str]:
    rng = random.Random(seed + 1)
    ops = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]
    lines = []
    for _ in range(size):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        sym, fn = rng.choice(ops)
        lines.append(f"user\nWhat is {a}{sym}{b}? Put the final answer in \\boxed{{}}.\nassistant\n"
                     f"{a} {sym} {b} = {fn(a, b)}. The answer is \\boxed{{{fn(a, b)}}}.")
    return lines


def build_assets(setting: Setting, cache: Path = CACHE) -> tuple[Path, Path]:
    """(model dir, data JSONL) for ``setting``, built once and cached (an HF dir: ``from_pretrained`` loads it)."""
    base = cache / setting.asset_key()
    model_dir, data = base / "model", base / "train.jsonl"
    if (model_dir / "config.json").exists() and data.exists():
        return model_dir, data
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=setting.vocab, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tokenizer_corpus(setting.seed), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     bos_token=None, model_max_length=512)
    hf_tok.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(vocab_size=len(hf_tok), hidden_size=setting.hidden, intermediate_size=setting.intermediate,
                         num_hidden_layers=setting.layers, num_attention_heads=setting.heads,
                         num_key_value_heads=setting.kv_heads, max_position_embeddings=512, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
    torch.manual_seed(setting.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    tmp = base.with_name(base.name + f".tmp{os.getpid()}")
    (tmp / "model").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp / "model", safe_serialization=True)
    hf_tok.save_pretrained(tmp / "model")
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arithmetic_rows(setting.num_prompts, setting.seed)))
    if base.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(base)
    return model_dir, data


def prorl_overrides(setting: Setting, *, model_dir: Path, data: Path, run_dir: Path, steps: int,
                    engine: str = "hf", precision: str = "fp32", fast: bool = False,
                    extra: list[str] | tuple = ()) -> list[str]:
    """Dotted overrides (over prorl's defaults, not the tiny preset) that make prorl run ``setting``."""
    s = setting
    return [
        f"model.path={model_dir}", f"data.train_files=[{data}]", "data.max_prompt_length=256",
        f"rollout.engine={engine}", f"rollout.n={s.n}", f"rollout.temperature={s.temperature}", "rollout.top_p=1.0",
        f"rollout.max_response_length={s.max_new_tokens}",
        f"algo.eps_low={s.eps_low}", f"algo.eps_high={s.eps_high}", f"algo.kl_coef={s.beta}", "algo.kl_estimator=k3",
        "algo.loss_agg_mode=token-mean", "algo.dynamic_sampling=false", "algo.entropy_coef=0.0",
        f"actor.lr={s.lr}", "actor.weight_decay=0.0", "actor.grad_clip=1.0",
        f"actor.train_batch_size={s.prompts_per_step}", f"actor.ppo_mini_batch_size={s.prompts_per_step}",
        "actor.ppo_epochs=1", f"actor.micro_batch_size={s.prompts_per_step * s.n}",
        "validation.every=0", "validation.at_start=false",
        f"trainer.total_steps={steps}", "trainer.save_every=0", "trainer.max_minutes=0", f"trainer.seed={s.seed}",
        f"trainer.threads={s.threads}", "trainer.tensorboard=false", "trainer.progress_bar=false",
        "trainer.device=cpu", f"trainer.run_dir={run_dir}",
        *PRECISION_OVERRIDES[precision],
        *((PRORL_FAST + (PRORL_FAST_VLLM if engine == "vllm" else ())) if fast else ()),
        *extra,
    ]


def prorl_config(setting: Setting, **kw: Any):
    """The prorl :class:`~prorl.config.Config` of ``setting`` (see :func:`prorl_overrides`)."""
    from prorl.config import load_config

    return load_config(None, prorl_overrides(setting, **kw), preset=False)


def prorl_worker(spec: dict, gate: Gate | None = None) -> dict:
    """Run prorl's trainer for ``spec['steps']`` steps; per-step seconds, tokens and phases from metrics.jsonl.

    With a ``gate`` each step waits for the driver's go before it starts and reports done once it is
    logged: the benchmark drives the controller's public ``step()`` itself."""
    from prorl.trainer.controller import Trainer
    from prorl.trainer.metrics import read_metrics

    setting = Setting(**spec["setting"])
    run_dir = Path(spec["run_dir"])
    cfg = prorl_config(setting, model_dir=Path(spec["model_dir"]), data=Path(spec["data"]), run_dir=run_dir,
                       steps=spec["steps"], engine=spec["engine"], precision=spec.get("precision", "fp32"),
                       fast=spec.get("fast", False), extra=spec.get("prorl_set", []))
    t0 = time.perf_counter()
    trainer = Trainer(cfg, overwrite=True, log=lambda *a, **k: None)
    try:
        while not trainer.should_stop():
            if gate is not None:
                gate.wait_go()
            trainer.step()
            if gate is not None:
                gate.done()
    finally:
        trainer.close()
    wall = time.perf_counter() - t0
    steps = [m for m in read_metrics(run_dir) if "timing_s/step" in m]
    batch = setting.prompts_per_step * setting.n
    return {"step_s": [m["timing_s/step"] for m in steps],
            "gen_tokens": [m["response_length/mean"] * batch for m in steps],
            "phases": {p: [m.get(f"timing_s/{p}", 0.0) for m in steps] for p in PRORL_PHASES},
            "gen_s": [m["timing_s/gen"] for m in steps], "wall_s": wall}


def trl_worker(spec: dict, gate: Gate | None = None) -> dict:
    """Run TRL's GRPOTrainer (inside the TRL venv) on the same model, prompts, reward and hyper-parameters."""
    import torch

    torch.set_num_threads(spec["setting"]["threads"])
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from prorl.verifiers.builtin import verify_builtin  # stdlib-only: the same scorer as prorl's arm

    s = Setting(**spec["setting"])
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["reward_model"]["ground_truth"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    eos = tok.eos_token_id

    def reward(completions, answer, **_: Any) -> list[float]:
        return [verify_builtin(c[0]["content"] if isinstance(c, list) else c, a, {}).score
                for c, a in zip(completions, answer)]

    step: dict[str, float] = {"gen_s": 0.0, "gen_tokens": 0.0, "nograd_logp_s": 0.0}
    generate = model.generate

    def timed_generate(*args: Any, **kwargs: Any):
        t = time.perf_counter()
        out = generate(*args, **kwargs)
        step["gen_s"] += time.perf_counter() - t
        step["torch_threads"] = torch.get_num_threads()  # what generate ran with (the Trainer may change it)
        comp = out[:, kwargs["input_ids"].shape[1]:]
        is_eos = comp == eos
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(comp[:, 0], comp.shape[1]))
        step["gen_tokens"] += float(first.sum())
        return out

    model.generate = timed_generate
    cfg = GRPOConfig(
        output_dir=spec["run_dir"], max_steps=spec["steps"], per_device_train_batch_size=s.prompts_per_step * s.n,
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, num_generations=s.n,
        max_completion_length=s.max_new_tokens, temperature=s.temperature, top_p=1.0, top_k=0, beta=s.beta,
        epsilon=s.eps_low, epsilon_high=s.eps_high, loss_type="dapo", scale_rewards="group", learning_rate=s.lr,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, seed=s.seed, use_cpu=True,
        bf16=TRL_BF16[spec.get("precision", "fp32")],
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        log_completions=False)
    times: list[float] = []
    per_step: list[dict[str, float]] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # generation happens inside the step
            if gate is not None:
                gate.wait_go()
            step.update(gen_s=0.0, gen_tokens=0.0, nograd_logp_s=0.0, torch_threads=torch.get_num_threads())
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)
            per_step.append(dict(step))
            if gate is not None:
                gate.done()

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=dataset, processing_class=tok,
                          callbacks=[Timer()])
    logp_fn = trainer._get_per_token_logps_and_entropies

    def timed_logp(*args: Any, **kwargs: Any):
        if torch.is_grad_enabled():
            return logp_fn(*args, **kwargs)
        t = time.perf_counter()
        out = logp_fn(*args, **kwargs)
        step["nograd_logp_s"] += time.perf_counter() - t
        return out

    trainer._get_per_token_logps_and_entropies = timed_logp
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    import trl
    import transformers

    return {"step_s": times, "gen_tokens": [p["gen_tokens"] for p in per_step], "gen_s": [p["gen_s"] for p in per_step],
            "phases": {"generate": [p["gen_s"] for p in per_step], "ref_log_prob": [p["nograd_logp_s"] for p in per_step]},
            "torch_threads": [p["torch_threads"] for p in per_step], "wall_s": wall, "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                                          "torch": torch.__version__}}


def ensure_trl_venv(venv: Path, log=print) -> Path:
    """The TRL venv's python, creating the venv (CPU torch 2.13.0, pinned TRL and transformers) if needed."""
    py = venv / "bin" / "python"
    probe = "import trl, transformers, torch; print(trl.__version__, transformers.__version__, torch.__version__)"
    if py.exists():
        r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.split()[:2] == [TRL_VERSION, TRANSFORMERS_VERSION] \
                and r.stdout.split()[2].startswith(TORCH_VERSION):
            return py
    log(f"creating the TRL venv in {venv} (trl=={TRL_VERSION}, transformers=={TRANSFORMERS_VERSION}, "
        f"torch=={TORCH_VERSION} CPU); a few minutes")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    wheels = sorted(TORCH_WHEEL_DIR.glob(f"torch-{TORCH_VERSION}+cpu-*.whl"))
    torch_req = str(wheels[0]) if wheels else f"torch=={TORCH_VERSION}"
    subprocess.run([str(py), "-m", "pip", "install", "-q", torch_req, f"trl=={TRL_VERSION}",
                    f"transformers=={TRANSFORMERS_VERSION}"], check=True)
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True)
    if "+cpu" not in r.stdout and not wheels:
        log(f"warning: the TRL venv's torch is {r.stdout.split()[2]}, not a +cpu build")
    return py


class ArmProcess:
    """One arm in a fresh subprocess. ``lockstep``: it waits for :meth:`step` before each training
    step (a :class:`Gate` over two pipes), so the driver can interleave the arms step by step.
    ``script``: the file whose ``--_worker=ARM SPEC OUT`` runs the arm (default: this one)."""

    def __init__(self, arm: str, python: str, spec: dict, workdir: Path, *, lockstep: bool,
                 script: Path | None = None):
        self.arm, self.workdir = arm, workdir
        spec_path, self.out_path = workdir / f"{arm}-spec.json", workdir / f"{arm}-out.json"
        spec_path.write_text(json.dumps(spec))
        self.out_path.unlink(missing_ok=True)
        threads = str(spec["setting"]["threads"])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
               "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "WANDB_DISABLED": "true", "PYTHONWARNINGS": "ignore"}
        cmd = [python, str(script or Path(__file__).resolve()), f"--_worker={arm}", str(spec_path), str(self.out_path)]
        fds: tuple[int, ...] = ()
        if lockstep:
            go_r, go_w = os.pipe()
            done_r, done_w = os.pipe()
            cmd += [str(go_r), str(done_w)]
            fds = (go_r, done_w)
        self.log_path = workdir / f"{arm}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                         pass_fds=fds)
        self.step_s: list[float] = []
        if lockstep:
            os.close(go_r)
            os.close(done_w)
            self._go, self._done = os.fdopen(go_w, "w"), os.fdopen(done_r, "r")

    def _expect(self, word: str) -> None:
        line = self._done.readline().strip()
        if line != word:
            self.proc.wait()
            raise RuntimeError(f"{self.arm} arm: expected {word!r}, got {line!r} (exit {self.proc.returncode}):\n"
                               + self.log_path.read_text()[-4000:])

    def wait_ready(self) -> None:
        self._expect("ready")

    def step(self) -> float:
        """Let the worker run one training step; the wall-clock seconds it took (go -> done)."""
        t = time.perf_counter()
        self._go.write("go\n")
        self._go.flush()
        self._expect("done")
        self.step_s.append(time.perf_counter() - t)
        return self.step_s[-1]

    def finish(self) -> dict:
        """Wait for the worker to exit; its result dict (raises with the log's tail on failure)."""
        self.proc.wait()
        if self.proc.returncode != 0 or not self.out_path.exists():
            raise RuntimeError(f"{self.arm} arm failed (exit {self.proc.returncode}):\n"
                               + self.log_path.read_text()[-4000:])
        res = json.loads(self.out_path.read_text())
        if self.step_s:
            res["driver_step_s"] = self.step_s
        return res


def run_lockstep(pythons: dict[str, str], specs: dict[str, dict], workdir: Path, steps: int, log=print) -> dict[str, dict]:
    """Both arms alive, stepping in turn (step i: TRL then prorl for odd i, prorl then TRL for even i):
    load from the rest of the machine hits both arms alike. Start-up and shut-down never overlap a step."""
    procs = {a: ArmProcess(a, pythons[a], specs[a], workdir, lockstep=True) for a in specs}
    for p in procs.values():
        p.wait_ready()
    arms = list(procs)
    results: dict[str, dict] = {}
    for i in range(steps):
        for a in (arms if i % 2 == 0 else arms[::-1]):
            procs[a].step()
            if i < steps - 1:
                procs[a].wait_ready()
            else:
                results[a] = procs[a].finish()
        log(f"  step {i + 1}: " + ", ".join(f"{a} {procs[a].step_s[-1]:.2f} s" for a in arms), flush=True)
    return results


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarise(runs: list[dict]) -> dict:
    """Pool steps 2..N of every run of one arm: median s/step, tokens/step, tokens/s, per-phase medians."""
    later = [(r, i) for r in runs for i in range(1 if len(r["step_s"]) > 1 else 0, len(r["step_s"]))]
    step_s = [r["step_s"][i] for r, i in later]
    toks = [r["gen_tokens"][i] for r, i in later]
    phases = {p: _med([r["phases"][p][i] for r, i in later]) for p in runs[0]["phases"]}
    # the rest of each step (medians of parts need not add up to the median of the whole)
    phases["other"] = _med([r["step_s"][i] - sum(r["phases"][p][i] for p in r["phases"]) for r, i in later])
    return {"s_per_step": _med(step_s), "step_s_all": step_s, "tokens_per_step": _med(toks),
            "tokens_per_s": _med([t / s for t, s in zip(toks, step_s)]),
            "gen_tokens_per_s": _med([t / g for t, g in zip(toks, [r["gen_s"][i] for r, i in later]) if g > 0]),
            "phases": phases}


def print_report(results: dict[str, list[dict]], arms: list[str]) -> dict:
    """Print every step, the pooled medians, the phases and the ratios; return the summary."""
    for a in arms:
        for i, res in enumerate(results[a]):
            print(f"{a:5s} run {i + 1} steps (s): " + " ".join(f"{x:.2f}" for x in res["step_s"]))
    report: dict[str, Any] = {a: summarise(results[a]) for a in arms}
    print(f"\n{'arm':6s} {'s/step':>8s} {'gen tok/step':>13s} {'tok/s (step)':>13s} {'tok/s (gen)':>12s}")
    for a in arms:
        r = report[a]
        print(f"{a:6s} {r['s_per_step']:8.2f} {r['tokens_per_step']:13.0f} {r['tokens_per_s']:13.0f}"
              f" {r['gen_tokens_per_s']:12.0f}")
    for a in arms:
        print(f"{a} phases (median s over steps 2..N): "
              + ", ".join(f"{p} {v:.2f}" for p, v in report[a]["phases"].items()))
    if "trl" in arms and results["trl"][0].get("versions"):
        print("TRL arm: " + ", ".join(f"{k} {v}" for k, v in results["trl"][0]["versions"].items()))
    if len(arms) == 2:
        report["ratio_trl_over_prorl"] = ratio = report["trl"]["s_per_step"] / report["prorl"]["s_per_step"]
        # steps run back to back (lockstep) saw the same load: the median of their per-step ratios
        pairs = [t / p for rt, rp in zip(results["trl"], results["prorl"])
                 for t, p in list(zip(rt["step_s"], rp["step_s"]))[1:]]
        report["paired_ratio_median"] = paired = _med(pairs)
        print(f"ratio TRL/prorl (median s/step): {ratio:.2f}; median of per-step ratios (steps 2..N): {paired:.2f}"
              f"  ({'prorl faster' if min(ratio, paired) > 1 else 'TRL faster' if max(ratio, paired) < 1 else 'inconclusive: the two disagree'})")
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="training steps per run (the median skips step 1)")
    ap.add_argument("--rounds", type=int, default=1, help="runs per arm")
    ap.add_argument("--interleave", choices=("step", "run"), default="step",
                    help="step: both arms alive, one step each in turn; run: whole runs in turn")
    ap.add_argument("--engine", default="hf", choices=("hf", "vllm"), help="prorl's rollout engine")
    ap.add_argument("--precision", default="fp32", choices=tuple(PRECISION_OVERRIDES),
                    help="both arms: fp32 everywhere, or bf16 mixed precision (TRL bf16=True; prorl model.autocast and "
                         "rollout.dtype bfloat16), or default: each on its own default (TRL bf16=True, prorl auto)")
    ap.add_argument("--prorl-plain", action="store_true",
                    help="prorl on its default settings, without PRORL_FAST (compile, eager attention, a larger packing budget)")
    ap.add_argument("--prorl-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra dotted override for prorl's arm (repeatable)")
    ap.add_argument("--prorl-python", default=sys.executable, help="interpreter of prorl's arm (e.g. a venv with vllm)")
    ap.add_argument("--trl-venv", type=Path, default=DEFAULT_TRL_VENV, help="TRL's venv (created when missing)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: a tiny model, 2 steps, 1 round")
    ap.add_argument("--only", choices=("prorl", "trl"), help="run one arm only (no ratio)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)
    setting = Setting.quick() if args.quick else Setting()
    steps, rounds = (2, 1) if args.quick else (args.steps, args.rounds)
    arms = [args.only] if args.only else ["trl", "prorl"]
    pythons = {"prorl": args.prorl_python}
    if "trl" in arms:
        pythons["trl"] = str(ensure_trl_venv(args.trl_venv))
    model_dir, data = build_assets(setting)
    print(f"setting: {json.dumps(dataclasses.asdict(setting))}; steps/run={steps}, rounds={rounds}, "
          f"prorl engine={args.engine}, precision={args.precision}, "
          f"prorl settings={'defaults' if args.prorl_plain else 'fast ' + str(list(PRORL_FAST))}"
          + (f", prorl overrides {args.prorl_set}" if args.prorl_set else "") + f"; model {model_dir}", flush=True)
    results: dict[str, list[dict]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory(prefix="vs_trl_") as tmp:
        for rnd in range(rounds):
            specs = {a: {"setting": dataclasses.asdict(setting), "model_dir": str(model_dir), "data": str(data),
                         "steps": steps, "engine": args.engine, "precision": args.precision,
                         "fast": not args.prorl_plain, "prorl_set": args.prorl_set, "run_dir": str(Path(tmp) / f"{a}-run{rnd}")}
                     for a in arms}
            if args.interleave == "step" and len(arms) == 2:
                print(f"round {rnd + 1}: both arms step by step, alternating which goes first", flush=True)
                for a, res in run_lockstep(pythons, specs, Path(tmp), steps).items():
                    results[a].append(res)
            else:
                for arm in (arms if rnd % 2 == 0 else arms[::-1]):
                    t = time.perf_counter()
                    res = ArmProcess(arm, pythons[arm], specs[arm], Path(tmp), lockstep=False).finish()
                    results[arm].append(res)
                    print(f"  round {rnd + 1} {arm:5s}: steps " + " ".join(f"{x:.2f}" for x in res["step_s"])
                          + f" s  (process {time.perf_counter() - t:.0f} s)", flush=True)
    report = print_report(results, arms)
    if args.json:
        args.json.write_text(json.dumps({"setting": dataclasses.asdict(setting), "engine": args.engine,
                                         "precision": args.precision, "prorl_fast": not args.prorl_plain,
                                         "prorl_set": args.prorl_set, "report": report, "raw": results},
                                        indent=1))
    return report


def _worker_main(arm: str, spec_path: str, out_path: str, fds: list[str]) -> None:
    spec = json.loads(Path(spec_path).read_text())
    gate = Gate(int(fds[0]), int(fds[1])) if fds else None
    res = (trl_worker if arm == "trl" else prorl_worker)(spec, gate)
    Path(out_path).write_text(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) in (4, 6) and sys.argv[1].startswith("--_worker="):
        _worker_main(sys.argv[1].split("=", 1)[1], sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main()
