"""Random-init models of Qwen2.5-0.5B's published architecture, saved as a user's checkpoint would be.

Shared by ``bench_lora.py`` and ``bench_real_size.py``: hidden 896, 14 heads / 2 KV heads,
intermediate 4864, vocabulary 151,936, tied embeddings, rope theta 1e6; ``layers`` = 24 for the
real size (fewer for the cut-down slow test). The tokenizer is ``vs_trl``'s small BPE one (512
ids, a chat template): any tokenizer does for timing and memory, since the token ids it produces
stay below the model's vocabulary, and a random model samples from the whole vocabulary anyway.
Built once with ``from_config``, written with ``save_pretrained`` (safetensors) and cached; the
trainer and vLLM then load it through ``from_pretrained`` like any other checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".bench_lora"
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_attention_heads=14,
                  num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True)


def model_dir(layers: int = 24, cache: Path = CACHE) -> Path:
    """The HF directory of a Qwen2.5-0.5B-shaped random model with ``layers`` decoder layers
    (built and cached on first use; 24 layers: ``<cache>/qwen2.5-0.5b-shape``)."""
    out = cache / ("qwen2.5-0.5b-shape" if layers == 24 else f"qwen2.5-0.5b-shape-{layers}l")
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    sys.path.insert(0, str(REPO / "benchmarks"))
    import vs_trl

    small, _ = vs_trl.build_assets(vs_trl.Setting())
    tok = AutoTokenizer.from_pretrained(small)
    config = Qwen2Config(**QWEN25_05B, num_hidden_layers=layers, max_position_embeddings=32768,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out
