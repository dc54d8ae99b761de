"""Build the project's tiny default policy: a Qwen2-style config and a BPE tokenizer trained with
``tokenizers`` on the built-in tasks' text, both saved in Hugging Face format (loadable with
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``). No download needed."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus(seed: int = 0, size: int = 4000, tasks: Sequence[str] | None = None) -> list[str]:
    """Text the tokenizer is trained on: built-in task prompts and answers in the chat format.
    ``tasks`` defaults to the original two (add, sort), which reproduces the shipped tokenizer."""
    from prorl.data.builtin_tasks import ORIGINAL_TASKS, format_answer, generate_problems, usable_size

    tasks = tuple(tasks or ORIGINAL_TASKS)
    rng = random.Random(seed)
    lines = []
    for task in tasks:
        for p in generate_problems(task, usable_size(task, size // len(tasks)), seed, "train"):
            answer = format_answer(p.answer)
            lines.append(f"user\n{p.question} Put the final answer in \\boxed{{}}.\nassistant\n{answer}")
    lines.append("system\nYou are a helpful assistant. Think step by step. The answer is")
    rng.shuffle(lines)
    return lines


def build_tokenizer(vocab_size: int = 384, tasks: Sequence[str] | None = None):
    """A byte-level BPE tokenizer (digits always split one per token) wrapped as a HF fast tokenizer,
    trained on the text of the built-in ``tasks`` (default: add and sort, the shipped tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(tasks=tasks), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        model_max_length=256,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_model(tokenizer, *, hidden_size: int = 128, layers: int = 4, heads: int = 4, seed: int = 0):
    """A randomly initialised tiny Qwen2 causal LM sized to ``tokenizer``."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_theta=10_000.0,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def save_tiny(model, tokenizer, out_dir: str | Path) -> Path:
    """Save ``model`` and ``tokenizer`` to ``out_dir`` (generation stops at EOS and pads with PAD)."""
    out = Path(out_dir)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    from prorl.models.policy import no_transformers_progress_bars

    with no_transformers_progress_bars():  # no "Writing model shards" bar
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
