"""Whisper forward passes on transformers' weights, with sasr's own preallocated KV cache.

transformers supplies the modules and weights; the decode loop and its cache layout are ours, so the
engine can batch sequences of different lengths and (on CUDA) capture fixed-shape steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import WhisperForConditionalGeneration

from sasr.audio.constants import WINDOW_FRAMES
from sasr.models.rows import pad_to, steady_rows


@dataclass
class KVCache:
    """Decoder state of B sequences (the whole arena, or a view of some of its slots).

    self_k/self_v are written in place by position; cross_k/cross_v are computed once per encoding.
    """

    self_k: torch.Tensor  # [L, B, H, max_len, Dh]
    self_v: torch.Tensor  # [L, B, H, max_len, Dh]
    cross_k: torch.Tensor  # [L, B, H, num_audio_frames, Dh]
    cross_v: torch.Tensor  # [L, B, H, num_audio_frames, Dh]
    cross_len: torch.Tensor  # [B] long: audio frames each sequence's encoding filled (the rest is masked)

    def rows(self, start: int, stop: int) -> KVCache:
        """A view of sequences start..stop-1."""
        layered = (t[:, start:stop] for t in (self.self_k, self.self_v, self.cross_k, self.cross_v))
        return KVCache(*layered, self.cross_len[start:stop])

    def copy_row(self, src: int, dst: int, num_positions: int | None = None, num_frames: int | None = None) -> None:
        """Move a sequence's state to another slot: its first num_positions self-attention positions and
        num_frames audio frames (None: all; a whole row is 24 MB for tiny.en, most of it unused)."""
        for t, n in ((self.self_k, num_positions), (self.self_v, num_positions),
                     (self.cross_k, num_frames), (self.cross_v, num_frames)):
            t[:, dst, :, :n].copy_(t[:, src, :, :n])
        self.cross_len[dst] = self.cross_len[src]


def runs(lens: list[int]) -> list[tuple[int, int, int]]:
    """(first row, row after the last, length) of each run of equal consecutive lengths."""
    out = []
    for row, n in enumerate(lens):
        if out and out[-1][2] == n:
            out[-1] = (out[-1][0], row + 1, n)
        else:
            out.append((row, row + 1, n))
    return out


class WhisperModel:
    """Encoder and decoder passes of one Whisper model; the KV cache is passed in."""

    def __init__(self, model: WhisperForConditionalGeneration) -> None:
        self.model = model
        cfg = model.config
        self.num_layers = cfg.decoder_layers
        self.num_heads = cfg.decoder_attention_heads
        self.head_dim = cfg.d_model // cfg.decoder_attention_heads
        self.max_len = cfg.max_target_positions
        self.num_mel_bins = cfg.num_mel_bins
        self.num_audio_frames = cfg.max_source_positions
        self.decoder = model.model.decoder
        self.device = self.decoder.embed_tokens.weight.device
        self.dtype = self.decoder.embed_tokens.weight.dtype  # the decoder's and its KV cache's
        self.encoder_dtype = model.model.encoder.conv1.weight.dtype  # bf16 where quantised so (quant.py)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, T, D] -> [B, H, T, Dh]
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    @torch.inference_mode()
    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode mel windows [B, n_mels, F] (F even, at most 3000); return cross K and V [L, B, H, F/2, Dh].

        Full 30 s windows (F = 3000) are what Whisper was trained on; shorter ones (live streaming)
        cost proportionally less and attend only to the audio there is.
        """
        assert mel.shape[-1] <= WINDOW_FRAMES and mel.shape[-1] % 2 == 0, mel.shape
        encoder = self.model.model.encoder
        x = F.gelu(encoder.conv1(mel.to(self.device, self.encoder_dtype)))
        x = F.gelu(encoder.conv2(x)).transpose(1, 2)  # [B, F/2, D]
        x = x + encoder.embed_positions.weight[: x.shape[1]]
        for layer in encoder.layers:
            x = layer(x, None)
        hidden = encoder.layer_norm(x)  # [B, F/2, D]
        layers = self.decoder.layers
        cross_k = torch.stack([self._heads(layer.encoder_attn.k_proj(hidden)) for layer in layers])
        cross_v = torch.stack([self._heads(layer.encoder_attn.v_proj(hidden)) for layer in layers])
        return cross_k.to(self.dtype), cross_v.to(self.dtype)

    def new_cache(self, num_seqs: int, num_audio_frames: int) -> KVCache:
        """A zeroed cache for num_seqs sequences (the engine's arena, or a test's own)."""
        self_shape = (self.num_layers, num_seqs, self.num_heads, self.max_len, self.head_dim)
        cross_shape = (self.num_layers, num_seqs, self.num_heads, num_audio_frames, self.head_dim)
        zeros = lambda shape: torch.zeros(shape, device=self.device, dtype=self.dtype)
        cross_len = torch.full((num_seqs,), num_audio_frames, dtype=torch.long, device=self.device)
        return KVCache(zeros(self_shape), zeros(self_shape), zeros(cross_shape), zeros(cross_shape), cross_len)

    def logits(self, hidden: torch.Tensor, pad_rows: int = 0) -> torch.Tensor:
        """Next-token logits [M, V] (fp32) of final hidden states [M, D], computed over at least
        pad_rows rows (see steady_rows)."""
        rows = len(hidden)
        hidden = pad_to(hidden, pad_rows)
        if not isinstance(self.model.proj_out, nn.Linear):  # a reduced-precision copy (sasr.models.quant)
            return self.model.proj_out(hidden)[:rows]
        # W @ h.T rather than h @ W.T: for a few rows MKL runs the former 2-3x faster
        return torch.mm(self.decoder.embed_tokens.weight, hidden.T).T[:rows].float()

    @torch.inference_mode()
    def steady_rows(self, max_rows: int) -> int:
        """The fewest rows from which a decode step's products give each row the same numbers whatever
        the row count, up to max_rows, on this machine's kernels (sasr.models.rows)."""
        layer = self.decoder.layers[0]
        products = [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.fc1, layer.fc2, self.logits]
        widths = [f.in_features if isinstance(f, nn.Linear) else self.model.config.d_model for f in products]
        return steady_rows(products, widths, max_rows, self.device, self.dtype)

    @torch.inference_mode()
    def decode(
        self, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int,
        cross_kv_len: int | None = None, align_heads: dict[int, torch.Tensor] | None = None,
        cross_lens: list[int] | None = None, self_lens: list[int] | None = None, pad_rows: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run tokens [B, T] at positions [B, T]; return the final hidden states [B, T, D] and, with
        align_heads ({layer: [head, ...]}), those heads' cross-attention weights [B, A, T, cross_kv_len].

        Writes the tokens' self-attention K/V into the cache at their positions; each query attends
        to keys at positions up to its own, within the first kv_len positions, and to the first
        cross_len[b] audio frames of its encoding, within the first cross_kv_len (fixed lengths keep
        shapes static for CUDA graphs). cross_kv_len None: every sequence has a full encoding, no mask.
        cross_lens (the same lengths, on the host): each run of rows with equal lengths attends its
        own frames in a call of its own instead, unmasked, reading no frame past its encodings (eager
        only: a CPU batch of 10 s partials and 30 s finals otherwise reads every row's K/V as far as
        the longest's, 20% of a step at 8 rows). self_lens (one query a row, on the host): each row
        attends to its own positions in a call of its own, unmasked (eager only: in bf16 a masked tail
        as long as another row's rounds a row's attention otherwise, so its text would depend on its batch);
        pad_rows (with self_lens only): the matrix products run over at least that many rows (zeros past
        the batch's, see steady_rows).
        """
        batch = tokens.shape[0]
        mask = None  # [B, 1, T, kv_len], True where the key may be attended to (no mask row by row)
        if self_lens is None:
            if pad_rows > batch:
                raise ValueError("pad_rows needs self_lens: a masked step cannot take padded rows")
            mask = (torch.arange(kv_len, device=self.device)[None, None, :] <= positions[:, :, None])[:, None]
        cross_mask = None
        if cross_kv_len is None:
            cross_kv_len = cache.cross_k.shape[3]
        elif cross_lens is None:  # cross_mask: [B, 1, 1, cross_kv_len]
            cross_mask = (torch.arange(cross_kv_len, device=self.device) < cache.cross_len[:, None])[:, None, None]
        rows = torch.arange(batch, device=self.device)[:, None]  # [B, 1]
        x = pad_to(self.decoder.embed_tokens(tokens) + self.decoder.embed_positions.weight[positions], pad_rows)
        alignment = []
        for i, layer in enumerate(self.decoder.layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = self._heads(attn.q_proj(h))
            # k, v: [B, T, H, Dh], written at [b, :, positions[b]]
            cache.self_k[i][rows, :, positions] = attn.k_proj(h)[:batch].unflatten(-1, (self.num_heads, self.head_dim))
            cache.self_v[i][rows, :, positions] = attn.v_proj(h)[:batch].unflatten(-1, (self.num_heads, self.head_dim))
            k, v = cache.self_k[i][:, :, :kv_len], cache.self_v[i][:, :, :kv_len]
            if self_lens is None:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:
                o = pad_to(torch.cat([F.scaled_dot_product_attention(q[b : b + 1], k[b : b + 1, :, :n], v[b : b + 1, :, :n])
                                      for b, n in enumerate(self_lens)]), pad_rows)
            x = x + attn.out_proj(o.transpose(1, 2).flatten(2))
            cross = layer.encoder_attn
            q = self._heads(cross.q_proj(layer.encoder_attn_layer_norm(x)))
            k, v = cache.cross_k[i][:, :, :cross_kv_len], cache.cross_v[i][:, :, :cross_kv_len]
            if cross_lens is None:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=cross_mask)
            else:
                o = pad_to(torch.cat([F.scaled_dot_product_attention(q[a:b], k[a:b, :, :n], v[a:b, :, :n])
                                      for a, b, n in runs(cross_lens)]), pad_rows)
            if align_heads and i in align_heads:
                alignment.append(self._attention_weights(q[:batch], k, cross_mask, align_heads[i], cross_lens))
            x = x + cross.out_proj(o.transpose(1, 2).flatten(2))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        return self.decoder.layer_norm(x[:batch]), (torch.cat(alignment, dim=1) if alignment else None)

    def _attention_weights(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None,
                           heads: torch.Tensor, lens: list[int] | None = None) -> torch.Tensor:
        """Softmax weights [B, len(heads), T, F] of some heads (what SDPA computes but does not return);
        with lens, row by row over its own frames (zero past them)."""
        if lens is not None:
            return torch.cat([F.pad(self._attention_weights(q[a:b], k[a:b, :, :n], None, heads), (0, k.shape[2] - n))
                              for a, b, n in runs(lens)])
        q, k = q.index_select(1, heads), k.index_select(1, heads)
        scores = q @ k.transpose(-1, -2) * self.head_dim ** -0.5  # [B, A, T, F]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.float().softmax(-1)
