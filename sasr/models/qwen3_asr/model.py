"""Qwen3-ASR forward passes on transformers' weights: a windowed audio encoder and a Qwen3 decoder
whose keys and values live in sasr's block arena.

transformers supplies the modules and weights (`Qwen3ASRForConditionalGeneration`); the encoder pass
over whole 8 s windows and the paged decoder pass are ours, so the engine can batch sequences of any
length, reuse cached prefix blocks and cache the encodings of complete windows.

Encoder facts this relies on: mel frames are convolved in 1 s chunks of 100 frames (13 tokens each,
positions restarting per chunk) and attention stays inside 8 s windows of 800 frames (104 tokens),
so a complete window's encoding depends on its own audio alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

from sasr.audio.constants import HOP_SAMPLES
from sasr.audio.features import log_mel
from sasr.models.rows import pad_to, steady_rows
from sasr.models.qwen3_asr.vocab import (
    CHUNK_FRAMES,
    TOKENS_PER_CHUNK,
    WINDOW_FRAMES_QWEN,
    conv_out_len,
    num_audio_tokens,
)


@dataclass
class PagedKV:
    """The block arena: keys and values of every block, for every decoder layer, and one scratch row
    after the blocks where padding tokens write (no block table holds it, so nothing reads it)."""

    k: torch.Tensor  # [L, num_blocks * block_size + 1, Hkv, Dh]
    v: torch.Tensor  # [L, num_blocks * block_size + 1, Hkv, Dh]
    block_size: int

    @property
    def num_blocks(self) -> int:
        return (self.k.shape[1] - 1) // self.block_size

    @property
    def scratch_row(self) -> int:
        return self.num_blocks * self.block_size

    def blocks(self, layer: torch.Tensor) -> torch.Tensor:
        """One layer's K or V [rows, Hkv, Dh] as whole blocks: [num_blocks, block_size * Hkv * Dh]."""
        return layer[: self.scratch_row].view(self.num_blocks, -1)


class Qwen3ASR:
    """Encoder and decoder passes of one Qwen3-ASR model; the KV arena is passed in."""

    def __init__(self, model) -> None:
        self.model = model
        self.tower = model.model.audio_tower
        self.projector = model.model.multi_modal_projector
        self.lm = model.model.language_model
        text = model.config.text_config
        self.num_layers = text.num_hidden_layers
        self.num_heads = text.num_attention_heads
        self.num_kv_heads = text.num_key_value_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.num_mel_bins = model.config.audio_config.num_mel_bins
        self.enc_heads = model.config.audio_config.encoder_attention_heads
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    # -- encoder ---------------------------------------------------------------------------------

    def window_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Log-mel [n_mels, 800] of one window's samples (at most 8 s), zero past its frames.

        Each window is normalised on its own, so a complete window's features (and encoding) never
        change as more audio arrives; the original processor normalises the whole clip at once.
        """
        frames = len(audio) // HOP_SAMPLES
        mel = torch.zeros(self.num_mel_bins, WINDOW_FRAMES_QWEN, device=self.device)
        if frames:
            mel[:, :frames] = log_mel(audio.to(self.device), self.num_mel_bins)[:, :frames]
        return mel

    @torch.inference_mode()
    def encode_windows(self, audio: list[torch.Tensor]) -> list[torch.Tensor]:
        """Audio embeddings [num_audio_tokens(len), D] of each window's samples (each at most 8 s)."""
        mel = torch.stack([self.window_mel(a) for a in audio])  # [W, n_mels, 800]
        num_windows = len(audio)
        chunks = mel.unflatten(2, (-1, CHUNK_FRAMES)).permute(0, 2, 1, 3).flatten(0, 1)  # [W*8, n_mels, 100]
        x = chunks[:, None].to(self.dtype)
        for conv in (self.tower.conv2d1, self.tower.conv2d2, self.tower.conv2d3):
            x = F.gelu(conv(x))
        # x: [W*8, C, mel', 13] -> [W*8, 13, C*mel']
        x = self.tower.conv_out(x.permute(0, 3, 1, 2).flatten(2))
        x = x + self.tower.positional_embedding.positional_embedding[: x.shape[1]].to(x.dtype)
        x = x.unflatten(0, (num_windows, -1)).flatten(1, 2)  # [W, 104, D]
        counts = [num_audio_tokens(len(a)) for a in audio]
        # a token is real if it comes from a real frame of its chunk: [W, 104]
        frames = torch.tensor([len(a) // HOP_SAMPLES for a in audio], device=self.device)
        chunk_frames = (frames[:, None] - CHUNK_FRAMES * torch.arange(8, device=self.device)).clamp(0, CHUNK_FRAMES)
        chunk_tokens = torch.tensor([[conv_out_len(int(f)) for f in row] for row in chunk_frames.tolist()],
                                    device=self.device)
        valid = (torch.arange(TOKENS_PER_CHUNK, device=self.device) < chunk_tokens[..., None]).flatten(1)
        mask = valid[:, None, None, :]  # [W, 1, 1, 104]: keys that exist
        for layer in self.tower.layers:
            x = x + self._encoder_attention(layer, x, mask)
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        x = self.projector(self.tower.ln_post(x))  # [W, 104, D_text]
        return [x[w][valid[w]][: counts[w]] for w in range(num_windows)]

    def _encoder_attention(self, layer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn = layer.self_attn
        h = layer.self_attn_layer_norm(x)
        # q, k, v: [W, H, T, Dh]
        q, k, v = (p(h).unflatten(-1, (self.enc_heads, -1)).transpose(1, 2)
                   for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [W, H, T, Dh]
        return attn.out_proj(o.transpose(1, 2).flatten(2))

    # -- decoder ---------------------------------------------------------------------------------

    def new_arena(self, num_blocks: int, block_size: int) -> PagedKV:
        shape = (self.num_layers, num_blocks * block_size + 1, self.num_kv_heads, self.head_dim)
        zeros = lambda: torch.zeros(shape, device=self.device, dtype=self.dtype)
        return PagedKV(zeros(), zeros(), block_size)

    @staticmethod
    def _norm(norm, x: torch.Tensor) -> torch.Tensor:
        """transformers' Qwen3RMSNorm (normalise in fp32, scale in x's dtype) in one fused op, not eight."""
        normed = F.rms_norm(x.float(), x.shape[-1:], eps=norm.variance_epsilon)
        return norm.weight * normed.to(x.dtype)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(tokens)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [M, V] (fp32) of final hidden states [M, D]."""
        # W @ h.T rather than h @ W.T: for a few rows MKL runs the former 2-3x faster
        return torch.mm(self.model.lm_head.weight, hidden.T).T.float()

    @torch.inference_mode()
    def steady_rows(self, max_rows: int) -> int:
        """The fewest rows from which a decode step's products give each row the same numbers whatever
        the row count, up to max_rows, on this machine's kernels (sasr.models.rows)."""
        layer, width = self.lm.layers[0], self.lm.embed_tokens.weight.shape[1]
        attn = layer.self_attn
        products = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, layer.mlp, self.logits]
        widths = [width, width, width, attn.o_proj.in_features, width, width]
        return steady_rows(products, widths, max_rows, self.device, self.dtype)

    @torch.inference_mode()
    def decode(self, arena: PagedKV, x: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
               block_tables: torch.Tensor, kv_len: int, lens: list[int] | None = None) -> torch.Tensor:
        """Run input embeddings x [B, T, D] at positions [B, T]; return final hidden states [B, T, D].

        Each token's K/V is written to its arena row slots[b, t] (a padding token's is the scratch
        row); each query attends to its sequence's keys at positions up to its own, within the first
        kv_len positions: the leading blocks of its block table [B, max_blocks] (columns past its
        own blocks may hold any block: their positions are masked). Shapes depend on B, T and kv_len
        only, and nothing here reads a tensor's values on the host. lens (T = 1, on the host): each of
        the first len(lens) rows attends to its first lens[b] keys in a call of its own, unmasked, so a
        row's numbers do not depend on how long the others' are, and the rows after them are padding
        (attending to nothing: zeros; eager only, a CPU step).
        """
        batch = x.shape[0]
        rows = batch if lens is None else len(lens)  # rows that attend
        write = slots.flatten()  # [B*T]
        num_key_blocks = -(-kv_len // arena.block_size)
        key_blocks = block_tables[:rows, :num_key_blocks].flatten()  # [rows*nb]
        if lens is None:  # each query's keys up to its own position
            offsets = torch.arange(kv_len, device=self.device)
            mask = (offsets[None, None, :] <= positions[:, :, None])[:, None]  # [B, 1, T, kv_len]
        cos, sin = self.lm.rotary_emb(x, positions)
        for i, layer in enumerate(self.lm.layers):
            attn = layer.self_attn
            h = self._norm(layer.input_layernorm, x)
            q = self._norm(attn.q_norm, attn.q_proj(h).unflatten(-1, (self.num_heads, self.head_dim)))  # [B, T, H, Dh]
            k = self._norm(attn.k_norm, attn.k_proj(h).unflatten(-1, (self.num_kv_heads, self.head_dim)))
            v = attn.v_proj(h).unflatten(-1, (self.num_kv_heads, self.head_dim))
            q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)
            arena.k[i].index_copy_(0, write, k.flatten(0, 1))
            arena.v[i].index_copy_(0, write, v.flatten(0, 1))
            # whole blocks, one contiguous copy each: [B, nb * block_size, Hkv, Dh], cut to kv_len
            keys, values = (arena.blocks(t[i]).index_select(0, key_blocks).view(rows, -1, *k.shape[2:])[:, :kv_len]
                            for t in (arena.k, arena.v))
            q, keys, values = q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2)  # [B, heads, len, Dh]
            if lens is None:
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
            else:
                o = pad_to(torch.cat([F.scaled_dot_product_attention(q[b : b + 1], keys[b : b + 1, :, :n],
                                                                     values[b : b + 1, :, :n], enable_gqa=True)
                                      for b, n in enumerate(lens)]), batch)
            x = x + attn.o_proj(o.transpose(1, 2).flatten(2))
            x = x + layer.mlp(self._norm(layer.post_attention_layernorm, x))
        return self._norm(self.lm.norm, x)
