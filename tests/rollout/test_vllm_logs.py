"""The vLLM log filter (prorl/rollout/vllm_logs.py) drops exactly the listed records, only on
their logger, only at WARNING or below, and only inside the block. No vLLM needed: it filters
standard ``logging`` records on vLLM's logger names."""

from __future__ import annotations

import logging

import pytest

from prorl.rollout import vllm_logs

LAYERWISE = "vllm.model_executor.model_loader.reload.layerwise"


@pytest.fixture
def records():
    """Records reaching a handler on the ``vllm`` logger, as vLLM's own handler would see them."""
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    root = logging.getLogger("vllm")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield seen
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_only_the_expected_records_are_dropped(records):
    log = logging.getLogger(LAYERWISE)
    with vllm_logs.dropped(vllm_logs.RELOAD):
        log.warning("%s: Failed to load weights", "RotaryEmbedding")  # expected: dropped
        log.warning("%s: Failed to load weights", "QKVParallelLinear")  # a real failure: kept
        log.warning("%s: Failed to load weights", "ParallelLMHead")  # kept unless the engine is tied
        log.error("%s: Failed to load weights", "RotaryEmbedding")  # errors always pass
        logging.getLogger("vllm.other").warning("RotaryEmbedding: Failed to load weights")  # another logger
    log.warning("%s: Failed to load weights", "RotaryEmbedding")  # after the block: kept
    assert [(r.name, r.levelname, r.getMessage()) for r in records] == [
        (LAYERWISE, "WARNING", "QKVParallelLinear: Failed to load weights"),
        (LAYERWISE, "WARNING", "ParallelLMHead: Failed to load weights"),
        (LAYERWISE, "ERROR", "RotaryEmbedding: Failed to load weights"),
        ("vllm.other", "WARNING", "RotaryEmbedding: Failed to load weights"),
        (LAYERWISE, "WARNING", "RotaryEmbedding: Failed to load weights"),
    ]
    assert not log.filters


def test_tied_lm_head_and_sleep_entries(records):
    with vllm_logs.dropped(vllm_logs.RELOAD + vllm_logs.RELOAD_TIED + vllm_logs.SLEEP_CPU + vllm_logs.GENERATE):
        logging.getLogger(LAYERWISE).warning("%s: Failed to load weights", "ParallelLMHead")
        logging.getLogger("vllm.v1.worker.cpu_worker").warning("sleep mode is not supported on CPU, ignore it.")
        logging.getLogger("vllm.renderers.base").warning("Using None for EOS token id because tokenizer is not "
                                                         "initialized")
        logging.getLogger("vllm.v1.worker.cpu_worker").warning("Available memory on node 0 is low")  # kept
    assert [r.getMessage() for r in records] == ["Available memory on node 0 is low"]


def test_every_entry_says_why():
    entries = (vllm_logs.STARTUP + vllm_logs.STARTUP_CPU + vllm_logs.GENERATE + vllm_logs.SLEEP_CPU
               + vllm_logs.RELOAD + vllm_logs.RELOAD_TIED)
    assert all(e.logger.startswith("vllm.") and e.starts and len(e.why) > 20 for e in entries)
    assert len({(e.logger, e.starts) for e in entries}) == len(entries)
