"""Products whose numbers do not depend on how many rows share them.

A CPU library picks a matrix product's kernel, and so its rounding, by the number of rows: MKL's
fp32 products give a row other last bits at 1-15 rows than at 16 or more (tiny.en's shapes, an
Intel Xeon), oneDNN's bf16 ones from 33 rows. A decode step run with at least `steady_rows` rows
(zeros past its batch's) gives each sequence the same numbers, so the same tokens, whatever else
shares its step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def steady_rows(products: list[Callable[[torch.Tensor], torch.Tensor]], widths: list[int], max_rows: int,
                device: torch.device, dtype: torch.dtype) -> int:
    """The fewest rows from which every product (taking rows of its width) gives each row the same
    numbers whatever the row count, up to max_rows (1: any count). Measured with random inputs: the
    kernel is chosen by shape, not by values."""
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(max_rows, width, generator=generator).to(device, dtype) for width in widths]
    full = [f(x) for f, x in zip(products, inputs)]
    steady = max_rows
    while steady > 1 and all(torch.equal(f(x[: steady - 1]), out[: steady - 1])
                             for f, x, out in zip(products, inputs, full)):
        steady -= 1
    return steady


def pad_to(x: torch.Tensor, rows: int) -> torch.Tensor:
    """x with zero rows appended along its first dimension up to rows (x itself if it has as many)."""
    return x if len(x) >= rows else torch.cat([x, x.new_zeros(rows - len(x), *x.shape[1:])])
