"""Count-Sketch of a vector (Charikar et al. 2002), the linear summary that gs-SGD (arXiv 2108.06004) and
Sketched-SGD (arXiv 1903.04488) all-reduce instead of the gradient.

A sketch has ``r`` rows and ``c`` columns; row ``i`` has a bucket hash ``h_i: [d] → [c]`` and a sign hash
``s_i: [d] → {±1}``::

    S[i, h_i(j)] += s_i(j) · v_j                      (sketch, linear in v)
    v̂_j = median_i  s_i(j) · S[i, h_i(j)]             (estimate of coordinate j)

Every worker builds the same hashes from the same seed, so ``Σ_w sketch(v_w) = sketch(Σ_w v_w)``.

Hash choice: row ``i``'s bucket hash is ``π_i(j) mod c`` for a seeded random permutation ``π_i`` of
``[d]``. Every column then receives ``⌊d/c⌋`` or ``⌈d/c⌉`` coordinates (no overloaded column), and with
``c ≥ d`` the hash is injective, so the sketch stores the vector exactly and every estimate is exact.
"""

from __future__ import annotations

import torch


class CountSketch:
    """The hashes of an ``rows × cols`` Count-Sketch of vectors of length ``dim``.

    Args:
        dim: length ``d`` of the sketched vectors.
        rows: number of independent hash rows ``r`` (the estimate is their median; odd ``r`` avoids averaging).
        cols: columns ``c`` per row.
        seed: seed of the hashes; workers that share it share the sketch.
        device: where the hash tables and sketches live.
    """

    def __init__(self, dim: int, rows: int, cols: int, seed: int, device: torch.device | str = "cpu") -> None:
        if dim < 1 or rows < 1 or cols < 1:
            raise ValueError(f"a Count-Sketch needs dim, rows, cols ≥ 1 (got {dim}, {rows}, {cols})")
        self.dim, self.rows, self.cols = dim, rows, cols
        g = torch.Generator().manual_seed(seed)
        buckets = torch.stack([torch.randperm(dim, generator=g) % cols for _ in range(rows)])
        signs = torch.randint(0, 2, (rows, dim), generator=g).mul_(2).sub_(1)
        offsets = torch.arange(rows).unsqueeze(1) * cols
        # Flat indices into the (rows·cols) table, so one index_add_ sketches all rows at once.
        self.index = (buckets + offsets).reshape(-1).to(device)
        self.signs = signs.to(device=device, dtype=torch.float32)

    @property
    def size(self) -> int:
        """Numbers in one sketch (what a worker sends instead of ``dim``)."""
        return self.rows * self.cols

    def sketch(self, v: torch.Tensor) -> torch.Tensor:
        """The ``rows × cols`` table ``S[i, h_i(j)] = Σ_j s_i(j) v_j`` of a length-``dim`` vector."""
        if v.shape != (self.dim,):
            raise ValueError(f"sketch expects a vector of shape ({self.dim},), got {tuple(v.shape)}")
        signs = self.signs.to(v.dtype)
        table = torch.zeros(self.size, dtype=v.dtype, device=v.device)
        table.index_add_(0, self.index, (signs * v).reshape(-1))
        return table.view(self.rows, self.cols)

    def estimate(self, table: torch.Tensor) -> torch.Tensor:
        """``v̂_j = median_i s_i(j) · S[i, h_i(j)]`` for every coordinate (length ``dim``)."""
        if table.shape != (self.rows, self.cols):
            raise ValueError(f"estimate expects a table of shape ({self.rows}, {self.cols}), got {tuple(table.shape)}")
        per_row = table.reshape(-1)[self.index].view(self.rows, self.dim) * self.signs.to(table.dtype)
        if self.rows == 1:
            return per_row[0]
        if self.rows == 2:
            return per_row.mean(0)
        return per_row.median(0).values

    def heavy(self, table: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the ``k`` coordinates of largest estimated magnitude, and their estimates."""
        est = self.estimate(table)
        idx = est.abs().topk(min(k, self.dim), sorted=False).indices
        return idx, est[idx]
