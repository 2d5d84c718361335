"""KV blocks for decoder-only models, with prefix reuse: pure Python, no torch.

The runner's KV arena is cut into fixed-size blocks; each sequence holds a block table (block ids in
position order). A full block of a prompt is named by a chained hash: the hash of the block before
it and the keys of its tokens (token ids, or for audio placeholders a digest of the audio they stand
for). A later prompt that starts the same way finds those blocks by hash and skips computing them
(the nano-vllm / vLLM scheme). Blocks are reference counted; one nobody references keeps its KV and
its hash until the arena needs the space (least recently freed first), so a live session's next
chunk usually finds its predecessor's blocks.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np


def chain_hashes(keys: list[int], block_size: int) -> list[bytes]:
    """One hash per full block of keys; each covers every key before it too."""
    hashes, previous = [], b""
    for start in range(0, len(keys) - block_size + 1, block_size):
        data = np.asarray(keys[start : start + block_size], dtype=np.uint64).tobytes()
        previous = hashlib.blake2b(previous + data, digest_size=16).digest()
        hashes.append(previous)
    return hashes


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None  # set once the block holds a full prompt block's KV


@dataclass
class Allocation:
    block_table: list[int]  # block ids, in position order
    num_cached_tokens: int  # leading tokens whose KV is already in those blocks
    hashes: list[bytes] = field(default_factory=list)  # of the sequence's full prompt blocks


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # LRU first
        self.cached: dict[bytes, int] = {}  # hash -> block id (referenced or free)
        self.num_queried_tokens = 0  # prompt tokens looked up in the cache
        self.num_hit_tokens = 0  # of those, the ones found

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, num_tokens: int) -> bool:
        return self.blocks_needed(num_tokens) <= self.num_free_blocks  # cache hits only make it easier

    def allocate(self, keys: list[int], num_tokens: int) -> Allocation:
        """Blocks for a sequence of num_tokens positions whose prompt has these hash keys.

        The longest run of leading full prompt blocks found in the cache is shared; the rest are
        fresh. At least one prompt token is always left to compute (its logits start the decode).
        """
        hashes = chain_hashes(keys, self.block_size)
        table, num_cached = [], 0
        if self.enable_prefix_caching:
            for h in hashes:
                block_id = self.cached.get(h)
                if block_id is None or (num_cached + self.block_size >= len(keys)):
                    break
                self._take(block_id)
                table.append(block_id)
                num_cached += self.block_size
            self.num_queried_tokens += len(keys)
            self.num_hit_tokens += num_cached
        while len(table) < self.blocks_needed(num_tokens):
            block_id = self._evict()
            self._take(block_id)
            table.append(block_id)
        return Allocation(table, num_cached, hashes)

    def register(self, allocation: Allocation) -> None:
        """Publish the sequence's full prompt blocks once their KV is written (after its prefill)."""
        if not self.enable_prefix_caching:
            return
        for h, block_id in zip(allocation.hashes, allocation.block_table):
            block = self.blocks[block_id]
            if block.hash is None and h not in self.cached:
                block.hash = h
                self.cached[h] = block_id

    def free(self, allocation: Allocation) -> None:
        for block_id in reversed(allocation.block_table):  # tail blocks are evicted first
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_ids[block_id] = None
        allocation.block_table = []

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_ids[block_id]
        block.ref_count += 1

    def _evict(self) -> int:
        """The least recently freed block, its cached content forgotten."""
        block_id = next(iter(self.free_ids))
        block = self.blocks[block_id]
        if block.hash is not None:
            del self.cached[block.hash]
            block.hash = None
        return block_id
