"""A real Qwen3-ASR architecture with tiny random weights and a byte-level BPE trained here on the
Harvard sentences: what the CPU tests and the CPU prefix benchmark run (no weights can be fetched)."""

from __future__ import annotations

from pathlib import Path

import torch

from sasr.models.qwen3_asr.vocab import SPECIAL_TOKENS
from tests.support.speech import HARVARD


def build_tokenizer(vocab_size: int = 384):
    """A byte-level BPE trained on the Harvard sentences, with Qwen3-ASR's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
