"""Offline tiny Qwen2 judge model for tests, demos and benchmarks.

The Hub cannot be reached in CI, so tests cannot download even a tiny model. This module builds one
locally: a random-weight ``Qwen2ForCausalLM`` and a byte-level BPE tokenizer trained on built-in
English + Chinese text, with Qwen2's ChatML chat template. The folder loads with the ordinary
``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` calls, so every stage runs its real
loading code on it.

Gotcha (transformers 5.x): a folder whose ``config.json`` says ``model_type: qwen2`` loads its
tokenizer as ``Qwen2Tokenizer``, which rebuilds Qwen2's own normalizer and pre-tokenizer and ignores
the saved ones. We therefore train the BPE *with* Qwen2's pre-tokenizer, so training and loading agree.
"""

from __future__ import annotations

from pathlib import Path

# Qwen2-7B-Instruct's template: a default system turn when the conversation has none.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Built-in training text: judge-prompt vocabulary in both languages plus everyday sentences, so
# rendered prompts tokenize to a sensible length.
_CORPUS_EN = """\
As an evaluation expert, given a question and two possible answers to it, please select which answer
best fits in terms of coherence, accuracy, coverage, and the overall quality defined above.
Please output your judgment in JSON format, where "reason" is the explanation you provide and
"better_answer" is the integer 1 or 2, for example {"reason": "your explanation", "better_answer": 1}.
Below are the question and the candidate answers. Question: Answer 1: Answer 2:
It is known that answer 1 is better; please explain why. It is known that answer 2 is better.
The quick brown fox jumps over the lazy dog. Name a fruit. An apple, a banana, an orange, a pear.
The weather today is sunny with a light breeze, and the temperature is about twenty degrees.
Write a short poem about the sea. Explain how photosynthesis works in plants.
What is the capital of France? Paris is the capital of France. The answer is correct and complete.
The first answer is more accurate, while the second answer contains a factual error.
def add(a, b): return a + b  # Python code; print("hello world"); x = [1, 2, 3]
Human: Assistant: user assistant system. You are a helpful assistant.
"""

_CORPUS_ZH = """\
作为一个评价专家，给定一个问题和它的两个可能的回答，请选出哪一个回答在连贯性、准确性、覆盖度和上述定义的整体质量方面最为符合。
请用JSON格式输出你的判断, 其中"原因"是你提供的解释，"更好的回答"是整数类型的1或2，例如{"原因": "你的解释", "更好的回答": 1}。以下是问题和候选回答的内容：
问题：回答1：回答2：
作为一个评价专家，给定一个问题和它的两个可能的回答，请分析二者在连贯性、准确性、覆盖度和上述定义的整体质量方面的表现。
已知回答1更好，请说明原因: 已知回答2更好，请说明原因:
回答1中的计算是错误的，回答2给出了正确的结果，因此回答2更好。回答1更加完整，覆盖了问题的所有方面。
你好，今天天气很好。请写一首关于大海的短诗。光合作用是植物利用阳光制造养分的过程。
法国的首都是巴黎。这个回答是正确的，而且解释清楚。我认为回答2更好。
"""


def build_tiny_model(
    out_dir: str | Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int = 1024,
    max_positions: int = 8192,
    seed: int = 0,
) -> Path:
    """Build and save a random-weight Qwen2 model with an offline-trained tokenizer.

    Deterministic for a given set of arguments. Returns ``out_dir``.
    """
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    sizes = {"hidden": hidden, "layers": layers, "heads": heads, "kv_heads": kv_heads, "vocab_size": vocab_size}
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    params = 2 * vocab_size * hidden + layers * 12 * hidden * hidden  # embeddings + decoder layers, about
    if params > 1_000_000_000:
        raise ValueError(f"a tiny model of about {params:,} parameters: at most 1,000,000,000")
    if hidden % heads or heads % kv_heads or (hidden // heads) % 2:
        raise ValueError("hidden must be divisible by heads, heads by kv_heads, and hidden/heads must be even")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS_EN, _CORPUS_ZH] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = QWEN2_CHAT_TEMPLATE
    fast.model_max_length = max_positions
    fast.save_pretrained(out)

    eos_id = fast.convert_tokens_to_ids("<|im_end|>")
    pad_id = fast.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False
    )
    model.save_pretrained(out)
    return out


def build_tiny_reward_model(base_dir: str | Path, out_dir: str | Path, *, seed: int = 0) -> Path:
    """A random-weight Qwen2 sequence-classification reward model (one score) on a tiny model's config
    and tokenizer, for tests of the scalar-RM baseline and its evaluation."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    out = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(base_dir)
    config = AutoConfig.from_pretrained(base_dir)
    config.num_labels = 1
    config.pad_token_id = tok.pad_token_id
    config.architectures = ["Qwen2ForSequenceClassification"]
    torch.manual_seed(seed)
    Qwen2ForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
