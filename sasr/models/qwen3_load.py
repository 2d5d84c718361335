"""Find and load Qwen3-ASR checkpoints: transformers (`-hf`) directories, hub ids, and random weights.

`--load-format dummy` builds the model from a config with random weights (seeded), so real-size cost
can be measured where no weights can be fetched; its output is meaningless, so it ignores end of
text and always writes a fixed number of tokens. A tiny config with a locally trained byte-level BPE
tokenizer (`write_tiny_checkpoint`) is what the CPU tests run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from sasr.models.qwen3_vocab import SPECIAL_TOKENS, Qwen3Vocab

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


def build_tokenizer(vocab_size: int = 384):
    """A byte-level BPE trained on the Harvard sentences, with Qwen3-ASR's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sasr.eval.speech import HARVARD

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    names = "system user assistant language English French German None"
    tok.train_from_iterator(HARVARD * 4 + [names] * 8, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def tiny_config(tokenizer):
    from transformers import Qwen3ASRConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen3ASRConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, output_dim=48, downsample_hidden_size=8),
        text_config=dict(vocab_size=-(-len(tokenizer) // 64) * 64 + 64, hidden_size=48, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=8192, tie_word_embeddings=True),
        audio_token_id=ids["<|audio_pad|>"], pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|endoftext|>"], ids["<|im_end|>"]],
    )


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A real Qwen3-ASR architecture with tiny random weights, saved as a transformers checkpoint."""
    from transformers import Qwen3ASRForConditionalGeneration

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(tiny_config(tokenizer))
    # At transformers' default init the encoder's output is its position embedding whatever the
    # audio, and the tied head just repeats the last token. torch's default init for the audio side
    # (and a louder conv projection) makes the text depend on the audio; louder decoder layers and a
    # sharper head make it vary, with greedy choices far from ties (batching and prefix reuse must
    # not flip a token by rounding).
    with torch.no_grad():
        for module in [*model.model.audio_tower.modules(), *model.model.multi_modal_projector.modules()]:
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.reset_parameters()
        model.model.audio_tower.conv_out.weight.mul_(30.0)
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight.mul_(5.0)
            layer.mlp.down_proj.weight.mul_(5.0)
        model.model.language_model.norm.weight.mul_(4.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def resolve_dir(model: str) -> Path:
    if (shipped := shipped_config(model)) is not None:
        return shipped
    from sasr.models.loader import resolve_checkpoint

    return resolve_checkpoint(model)


def load_qwen3_asr(model: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   load_format: str = "auto") -> LoadedQwen3:
    from transformers import AutoTokenizer, Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    path = resolve_dir(model)
    check_layout(json.loads((path / "config.json").read_text()), path)
    dummy = load_format == "dummy"
    has_tokenizer = (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()
    if not has_tokenizer and not dummy:
        raise FileNotFoundError(f"{path}: no tokenizer (tokenizer.json or vocab.json)")
    tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else build_tokenizer()
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
