"""Find and load Qwen3-ASR checkpoints: transformers (`-hf`) directories, hub ids, and random weights.

`--load-format dummy` builds the model from a config with random weights (seeded), so real-size cost
can be measured where no weights can be fetched; its output is meaningless, so it ignores end of
text and always writes a fixed number of tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from sasr.models.checkpoint import resolve_checkpoint
from sasr.models.qwen3_asr.vocab import SPECIAL_TOKENS, Qwen3Vocab

CONFIGS = Path(__file__).parent / "configs"  # shipped configs: --model qwen3-asr-0.6b --load-format dummy
DUMMY_OUTPUT_TOKENS = 12  # tokens a dummy model writes per decode


@dataclass
class LoadedQwen3:
    model: object  # Qwen3ASRForConditionalGeneration, eval mode, on the requested device and dtype
    vocab: Qwen3Vocab
    served_name: str
    ignore_eos: bool = False  # dummy weights: write fixed_output_tokens, whatever comes out
    fixed_output_tokens: int | None = None


def shipped_config(model: str | None) -> Path | None:
    if not model or "/" in model or model.startswith((".", "~")):
        return None  # a path or a hub id
    path = CONFIGS / model
    return path if (path / "config.json").is_file() else None


def is_qwen3_asr(model: str | None) -> bool:
    """Whether --model names a Qwen3-ASR checkpoint (a shipped config, a directory, or a hub id)."""
    if model is None:
        return False
    if shipped_config(model):
        return True
    config = Path(model).expanduser() / "config.json"
    if not config.is_file() and not Path(model).expanduser().exists():
        try:  # a hub id: its config says what it is (the weights come later, either way)
            from huggingface_hub import hf_hub_download

            config = Path(hf_hub_download(model, "config.json"))
        except Exception:
            return "qwen3-asr" in model.lower()  # no hub here: the name is all there is
    if config.is_file():
        raw = json.loads(config.read_text())
        return raw.get("model_type") == "qwen3_asr" or "thinker_config" in raw
    return False


def check_layout(raw: dict, path: Path) -> None:
    """Refuse the original (non -hf) layout: transformers would ignore its nested thinker_config
    and quietly build a model of the default shapes."""
    if "thinker_config" in raw:
        raise ValueError(
            f"{path}: this is the original Qwen3-ASR checkpoint layout (a nested thinker_config), which "
            "transformers' qwen3_asr does not read; use the transformers conversion instead, "
            "e.g. Qwen/Qwen3-ASR-0.6B-hf or Qwen/Qwen3-ASR-1.7B-hf"
        )
    if raw.get("model_type") != "qwen3_asr":
        raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not qwen3_asr")


def dummy_tokenizer():
    """A byte-level tokenizer with Qwen3-ASR's special tokens and no merges, for checkpoints without
    one (--load-format dummy on a shipped config): the text of random weights means nothing anyway."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def resolve_dir(model: str) -> Path:
    if (shipped := shipped_config(model)) is not None:
        return shipped
    return resolve_checkpoint(model)


def load_qwen3_asr(model: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   load_format: str = "auto") -> LoadedQwen3:
    from transformers import (
        AutoTokenizer,
        Qwen3ASRConfig,
        Qwen3ASRForConditionalGeneration,
    )

    path = resolve_dir(model)
    check_layout(json.loads((path / "config.json").read_text()), path)
    dummy = load_format == "dummy"
    has_tokenizer = (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()
    if not has_tokenizer and not dummy:
        raise FileNotFoundError(f"{path}: no tokenizer (tokenizer.json or vocab.json)")
    tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else dummy_tokenizer()
    if dummy:
        config = Qwen3ASRConfig.from_pretrained(path)
        torch.manual_seed(0)
        with torch.device(device):
            hf = Qwen3ASRForConditionalGeneration(config).to(dtype)
    else:
        hf = Qwen3ASRForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device)
    name = Path(model.rstrip("/")).name
    return LoadedQwen3(hf.eval(), Qwen3Vocab(tokenizer), served_name=name, ignore_eos=dummy,
                       fixed_output_tokens=DUMMY_OUTPUT_TOKENS if dummy else None)
