"""Rollouts with vLLM, colocated: the engine runs in the trainer's process, on the trainer's device.

vLLM is an optional extra (``bash scripts/install.sh --vllm``) and is imported only when this
engine is built. The engine core is kept in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so
that :meth:`VLLMRolloutEngine.load_weights` can hand it the trainer's tensors directly.

Log-probs: vLLM reports, by default, the log-probs of the *raw* distribution (before the
temperature). The engine is built with ``logprobs_mode="processed_logprobs"``, the distribution
the sampler actually drew from: ``log_softmax(logits / temperature)``, which is what the
trainer computes (:func:`prorl.models.policy.response_logprobs`). With ``top_p < 1`` it is
renormalised over the nucleus, so it is >= the trainer's log-prob by ``-log(nucleus mass)``: the
true sampling probability, which is what importance correction needs. Greedy (temperature 0)
reports ``log_softmax(logits)``, as the trainer uses temperature 1 there.

Logs: vLLM's INFO lines are off (``VLLM_LOGGING_LEVEL=WARNING`` unless set), and the warnings that
need no action in this setup are dropped around the calls that cause them
(:mod:`prorl.rollout.vllm_logs`); every other warning and error still shows.
"""

from __future__ import annotations

import os
import random
from typing import Iterable, Sequence

import numpy as np
import torch

from prorl.rollout import vllm_logs
from prorl.rollout.base import Completion

INSTALL_HINT = "bash scripts/install.sh --vllm"
_DTYPES = {"float32", "bfloat16", "float16"}


def import_vllm():
    """``vllm`` itself, in-process mode set first; a clear error naming the install command when missing."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the weight sync hands tensors to the engine directly
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its per-call INFO lines would drown the trainer's log
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"rollout.engine=vllm needs vLLM, which is not installed ({e}); install it with "
                          f"`{INSTALL_HINT}` (CPU) or `bash scripts/install.sh --gpu --vllm` (GPU)") from e
    return vllm


class VLLMRolloutEngine:
    """n samples per prompt from token-id prompts with vLLM; reports the sampler's per-token
    log-probs and takes new weights as (HF name, tensor) pairs.

    Seeding: call ``c`` of :meth:`generate` derives a per-prompt seed from ``(seed, c)``, so the
    same seed and the same sequence of calls give the same samples whatever else the process
    does with its random generators (vLLM's per-request generators are independent of torch's
    global one).
    """

    def __init__(
        self,
        model_path: str,
        *,
        eos_token_id: int | Sequence[int],
        pad_token_id: int,
        dtype: str = "float32",
        seed: int = 0,
        device: str = "cpu",
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        cpu_kv_cache_gib: float = 1.0,
        max_model_len: int = 0,
        enforce_eager: bool = True,
        sleep_level: int = 1,
    ):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        with vllm_logs.quiet_startup(on_cpu=torch.device(device).type == "cpu"):  # vLLM warns on import
            vllm = import_vllm()
            from vllm.platforms import current_platform

            self._sampling_params = vllm.SamplingParams  # a lazy import of vLLM's config

        on_cpu = current_platform.is_cpu()
        if on_cpu != (torch.device(device).type == "cpu"):
            raise RuntimeError(f"the trainer runs on {device!r} but this vLLM build targets "
                               f"{current_platform.device_type!r}: install the matching build "
                               f"(`{INSTALL_HINT}` for CPU, `bash scripts/install.sh --gpu --vllm` for CUDA)")
        self.eos_ids = sorted({eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id))
        self.pad_token_id = pad_token_id
        self.seed = seed
        self.sleep_level = sleep_level
        self._calls = 0
        self._asleep = False
        self._weights_awake = True
        memory = ({"kv_cache_memory_bytes": int(cpu_kv_cache_gib * 2**30)} if on_cpu
                  else {"gpu_memory_utilization": gpu_memory_utilization})
        # vLLM's start-up seeds the process's global generators and, on CPU, replaces
        # torch.set_num_threads with a no-op: the trainer in the same process keeps its own.
        rng_state = torch.random.get_rng_state()
        py_state, np_state = random.getstate(), np.random.get_state()
        cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        set_num_threads, num_threads = torch.set_num_threads, torch.get_num_threads()
        try:
            with vllm_logs.quiet_startup(on_cpu=on_cpu):
                self.llm = vllm.LLM(
                    model=str(model_path),
                    dtype=dtype,
                    seed=seed,
                    tensor_parallel_size=tensor_parallel_size,
                    max_model_len=max_model_len or None,
                    enforce_eager=enforce_eager,
                    enable_sleep_mode=current_platform.is_sleep_mode_available(),
                    logprobs_mode="processed_logprobs",
                    skip_tokenizer_init=True,  # token ids in and out; stop tokens given explicitly
                    generation_config="vllm",  # neutral defaults, not the checkpoint's generation_config.json
                    enable_prefix_caching=False,  # a cache would survive load_weights and serve stale KV
                    enable_chunked_prefill=False,  # a partly prefilled seeded request crashes vLLM on CPU (generator offset)
                    use_tqdm_on_load=False,  # no "Loading safetensors checkpoint shards" bar in the trainer's output
                    **memory,
                )
        finally:
            torch.set_num_threads = set_num_threads
            torch.set_num_threads(num_threads)
            torch.random.set_rng_state(rng_state)
            random.setstate(py_state)
            np.random.set_state(np_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
        hf_config = self.llm.llm_engine.model_config.hf_config
        self.tied_embeddings = bool(getattr(hf_config, "tie_word_embeddings", False))
        # what vLLM warns about at a weight sync / sleep that needs no action here (see vllm_logs)
        self._reload_expected = vllm_logs.RELOAD + (vllm_logs.RELOAD_TIED if self.tied_embeddings else ())
        self._sleep_expected = vllm_logs.SLEEP_CPU if on_cpu else ()

    # ------------------------------------------------------------------ generation

    def generate(self, prompts, *, n: int, temperature: float, top_p: float, max_new_tokens: int,
                 ) -> list[list[Completion]]:
        """``n`` completions per prompt, grouped by prompt, each with the sampler's log-probs
        (wakes the engine first if it sleeps)."""
        self.wake_up()  # the loop may validate between an update and the next step's wake-up
        if not prompts:
            return []
        base = random.Random(f"{self.seed}:{self._calls}").randrange(2**30)
        self._calls += 1
        greedy = temperature <= 0  # vLLM refuses n > 1 when greedy: one sample, repeated n times
        params = [
            self._sampling_params(
                n=1 if greedy else n,
                temperature=0.0 if greedy else temperature,
                top_p=1.0 if greedy else top_p,
                top_k=0,
                max_tokens=max_new_tokens,
                stop_token_ids=self.eos_ids,
                logprobs=0,  # the sampled token's log-prob only
                flat_logprobs=True,
                detokenize=False,
                seed=base + i * n,  # vLLM gives sample j of a request seed + j
            )
            for i in range(len(prompts))
        ]
        with vllm_logs.dropped(vllm_logs.GENERATE):
            outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        if greedy:
            return [[self._completion(out.outputs[0]) for _ in range(n)] for out in outputs]
        return [[self._completion(o) for o in sorted(out.outputs, key=lambda o: o.index)] for out in outputs]

    def _completion(self, out) -> Completion:
        ids = list(out.token_ids)
        lp = out.logprobs  # FlatLogprobs: position i's entries are start_indices[i]:end_indices[i]
        if lp is None or len(lp.start_indices) != len(ids):
            raise RuntimeError(f"vLLM returned {0 if lp is None else len(lp.start_indices)} log-probs "
                               f"for {len(ids)} tokens")
        logprobs = []
        for i, tok in enumerate(ids):
            j = next(k for k in range(lp.start_indices[i], lp.end_indices[i]) if lp.token_ids[k] == tok)
            logprobs.append(float(lp.logprobs[j]))
        stopped = bool(ids) and ids[-1] in self.eos_ids
        return Completion(ids, truncated=not stopped, logprobs=logprobs)  # as the HF engine: no EOS

    # ------------------------------------------------------------------ weights and memory

    def load_weights(self, named_weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload vLLM's weights in place from HF-named full tensors (streamed, one at a time).

        Goes through the worker's ``reload_weights``, which also redoes vLLM's post-processing
        of the layers (the CPU backend repacks linear layers after loading, so writing into the
        module's parameters directly would not do). A tied ``lm_head.weight`` is skipped: it is
        the embedding, and the LM head's derived copy of it is rebuilt afterwards (see
        :func:`refresh_shared_parameter_modules`). Callable while asleep (the weights are woken first)."""
        if self._asleep and not self._weights_awake:
            with vllm_logs.dropped(self._sleep_expected):
                self.llm.wake_up(tags=["weights"])
            self._weights_awake = True
        tied = self.tied_embeddings

        def stream():
            for name, tensor in named_weights:
                if tied and name == "lm_head.weight":
                    continue
                yield name, tensor.detach()

        with vllm_logs.dropped(self._reload_expected):
            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": stream(), "is_checkpoint_format": True})
        self.llm.collective_rpc(refresh_shared_parameter_modules)

    def configure(self, rollout) -> None:
        """A new stage's ``rollout`` section: nothing the engine holds can change (the sampling
        settings come with every :meth:`generate` call; the engine's own are fixed for the run)."""

    def sleep(self) -> None:
        """Free the KV cache (and offload or drop the weights, by ``sleep_level``) while the
        trainer updates. On CPU vLLM keeps its memory and only pauses scheduling."""
        if not self._asleep:
            with vllm_logs.dropped(self._sleep_expected):
                self.llm.sleep(level=self.sleep_level)
            self._asleep, self._weights_awake = True, False

    def wake_up(self) -> None:
        """Undo :meth:`sleep`: reallocate what is still asleep and resume scheduling."""
        if self._asleep:
            with vllm_logs.dropped(self._sleep_expected):
                self.llm.wake_up(tags=["kv_cache", "scheduling"] if self._weights_awake else None)
            self._asleep, self._weights_awake = False, True


def refresh_shared_parameter_modules(worker) -> int:
    """Runs on each vLLM worker after a reload: redo the post-load processing of every module
    that shares a parameter with another (a tied LM head and the embedding).

    ``reload_weights`` reprocesses only the modules whose weights it was given. A tied LM head
    gets none (its weight *is* the embedding), yet on CPU it computes the logits from a packed
    copy of that weight made at load time, which would stay stale: the embedding would change and
    the logits would not. Returns how many modules were refreshed."""
    owners: dict[int, list] = {}
    for module in worker.get_model().modules():
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), []).append(module)
    refreshed = 0
    for modules in owners.values():
        if len(modules) < 2:
            continue
        for module in modules:
            method = getattr(module, "quant_method", None)
            if method is not None and hasattr(method, "process_weights_after_loading"):
                method.process_weights_after_loading(module)
                refreshed += 1
    return refreshed
