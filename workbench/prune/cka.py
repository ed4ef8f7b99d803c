"""Linear CKA between layer representations (Kornblith et al. 2019, arXiv 1905.00414).

For representations X (n × p) and Y (n × q) of the same n samples (rows), with Gram matrices
K = X Xᵀ, L = Y Yᵀ and centring H = I − 11ᵀ/n,

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)),   HSIC(K, L) = tr(K H L H) / (n − 1)².

With column-centred X̃, Ỹ the biased (full-batch) estimate has two exact forms:

- feature space (cheaper when the width is below n): ‖Ỹᵀ X̃‖²_F / (‖X̃ᵀ X̃‖_F ‖Ỹᵀ Ỹ‖_F);
- Gram form: ⟨K̃, L̃⟩ / (‖K̃‖_F ‖L̃‖_F) with K̃ = X̃ X̃ᵀ = H K H.

The minibatch estimator (Nguyen et al. 2021, arXiv 2010.15327) averages the unbiased HSIC of
Song et al. (2012) over minibatches of size m ≥ 4, with K̃ = K with its diagonal set to zero:

    HSIC₁(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((m − 1)(m − 2)) − 2/(m − 2) · 1ᵀK̃ L̃ 1] / (m (m − 3)),
    CKA = Σ_b HSIC₁(K_b, L_b) / sqrt(Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b)).

Everything is computed in float64 (features are cast exactly from their dtype). ``cka_matrix``
hooks all module paths in one pass over the data and builds the whole L × L matrix from one
matrix product of stacked centred Grams (or of concatenated centred features when the total
width is below n).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from workbench.errors import WorkbenchError
from workbench.models.features import FeatureHooks

ESTIMATORS = ("biased", "unbiased")
_GRAM_BUDGET_BYTES = 1 << 30


def _as_matrix(x: Tensor) -> Tensor:
    """(n, ...) → (n, d) float64."""
    if x.dim() < 1 or x.shape[0] < 2:
        raise WorkbenchError(f"CKA needs at least 2 samples (rows), got a tensor of shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _centred(x: Tensor) -> Tensor:
    x = _as_matrix(x)
    return x - x.mean(dim=0, keepdim=True)


def linear_cka(x: Tensor, y: Tensor, form: str = "auto") -> Tensor:
    """Biased linear CKA of two representations ``x`` (n, ...) and ``y`` (n, ...) as a float64 scalar.

    ``form``: ``"feature"`` (‖ỸᵀX̃‖²_F / (‖X̃ᵀX̃‖_F ‖ỸᵀỸ‖_F)), ``"gram"`` (⟨K̃, L̃⟩ / (‖K̃‖_F ‖L̃‖_F)),
    or ``"auto"``: feature space when both widths are below n, Gram form otherwise.
    """
    if x.shape[0] != y.shape[0]:
        raise WorkbenchError(f"CKA needs the same samples in both inputs, got {x.shape[0]} and {y.shape[0]} rows")
    xc, yc = _centred(x), _centred(y)
    n = xc.shape[0]
    if form == "auto":
        form = "feature" if max(xc.shape[1], yc.shape[1]) < n else "gram"
    if form == "feature":
        cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
        return cross / (torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc))
    if form == "gram":
        k, l = xc @ xc.T, yc @ yc.T
        return (k * l).sum() / (torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l))
    raise WorkbenchError(f"unknown CKA form '{form}'; valid: auto, feature, gram")


def naive_cka_matrix(feats: Sequence[Tensor]) -> Tensor:
    """Reference L × L biased CKA matrix: every pair computed independently with :func:`linear_cka`."""
    num = len(feats)
    out = torch.empty(num, num, dtype=torch.float64)
    for i in range(num):
        for j in range(i, num):
            out[i, j] = out[j, i] = linear_cka(feats[i], feats[j]).cpu()
    return out


def _normalise(hsic: Tensor) -> Tensor:
    """CKA_lm = H_lm / sqrt(H_ll H_mm)."""
    diag = hsic.diagonal().sqrt()
    return hsic / (diag[:, None] * diag[None, :])


def biased_cka_matrix(feats: Sequence[Tensor], budget_bytes: int = _GRAM_BUDGET_BYTES) -> Tensor:
    """Full-batch biased CKA matrix of L representations of the same n samples, exact in float64.

    When the total width D = Σ d_l is below n, uses the feature-space form: one product
    C = Z̃ᵀ Z̃ of the concatenated centred features, then H_lm = ‖C_lm‖²_F. Otherwise builds each
    layer's centred Gram K̃_l = X̃_l X̃_lᵀ once and gets H = V Vᵀ, V = [vec K̃_1; …; vec K̃_L]. The Gram
    rows are produced in chunks so that the stacked (L, chunk · n) block stays within ``budget_bytes``.
    Returns an (L, L) float64 tensor on the features' device.
    """
    if not feats:
        raise WorkbenchError("CKA matrix needs at least one representation")
    n = feats[0].shape[0]
    if any(f.shape[0] != n for f in feats):
        raise WorkbenchError(
            f"CKA matrix needs the same samples for every layer, got rows {[f.shape[0] for f in feats]}"
        )
    widths = [f[0].numel() for f in feats]
    if sum(widths) < n:
        z = torch.cat([_centred(f) for f in feats], dim=1)
        c = z.T @ z
        edges = [0]
        for w in widths:
            edges.append(edges[-1] + w)
        num = len(feats)
        hsic = torch.empty(num, num, dtype=torch.float64, device=z.device)
        for i in range(num):
            for j in range(i, num):
                block = c[edges[i] : edges[i + 1], edges[j] : edges[j + 1]]
                hsic[i, j] = hsic[j, i] = (block * block).sum()
        return _normalise(hsic)
    num = len(feats)
    chunk = max(1, min(n, budget_bytes // (8 * num * n)))
    hsic = None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = torch.empty(num, stop - start, n, dtype=torch.float64, device=feats[0].device)
        for l, f in enumerate(feats):
            xc = _centred(f)
            torch.mm(xc[start:stop], xc.T, out=rows[l])
        v = rows.reshape(num, -1)
        part = v @ v.T
        hsic = part if hsic is None else hsic + part
    return _normalise(hsic)


def unbiased_hsic_matrix(feats: Sequence[Tensor]) -> Tensor:
    """(L, L) matrix of unbiased HSIC₁ (Song et al. 2012) between L representations of one minibatch."""
    m = feats[0].shape[0]
    if m < 4:
        raise WorkbenchError(f"the unbiased HSIC needs at least 4 samples per batch, got {m}")
    grams = torch.stack([(x @ x.T) for x in map(_as_matrix, feats)])
    grams.diagonal(dim1=1, dim2=2).zero_()
    v = grams.reshape(len(feats), -1)
    sums = v.sum(dim=1)
    rows = grams.sum(dim=2)
    hsic = v @ v.T + torch.outer(sums, sums) / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * (rows @ rows.T)
    return hsic / (m * (m - 3))


class CKAAccumulator:
    """Accumulates the L × L CKA matrix over minibatches of hooked features.

    ``biased``: keeps every batch's features (in their own dtype, on their device) and computes the
    full-batch estimate with :func:`biased_cka_matrix` at the end (the biased estimator needs all n
    samples at once). ``unbiased``: adds each batch's :func:`unbiased_hsic_matrix` and keeps nothing
    else; batches with fewer than 4 samples are skipped (counted in ``skipped``).
    """

    def __init__(self, estimator: str = "biased") -> None:
        if estimator not in ESTIMATORS:
            raise WorkbenchError(f"unknown CKA estimator '{estimator}'; valid: {', '.join(ESTIMATORS)}")
        self.estimator = estimator
        self._store: list[list[Tensor]] = []
        self._hsic: Tensor | None = None
        self.samples = 0
        self.skipped = 0

    def update(self, feats: Sequence[Tensor]) -> None:
        """Add one minibatch: ``feats[l]`` is layer l's output (batch, ...)."""
        feats = [f.detach().reshape(f.shape[0], -1) for f in feats]
        if self.estimator == "biased":
            if not self._store:
                self._store = [[] for _ in feats]
            for bucket, f in zip(self._store, feats, strict=True):
                bucket.append(f)
        else:
            if feats[0].shape[0] < 4:
                self.skipped += 1
                return
            part = unbiased_hsic_matrix(feats)
            self._hsic = part if self._hsic is None else self._hsic + part
        self.samples += feats[0].shape[0]

    def compute(self) -> Tensor:
        """The (L, L) float64 CKA matrix on the CPU (the biased estimator frees its stored features)."""
        if self.estimator == "biased":
            if not self._store:
                raise WorkbenchError("CKA got no data: the loader yielded no batches")
            feats = []
            while self._store:
                feats.append(torch.cat(self._store.pop(0)))
            return biased_cka_matrix(feats).cpu()
        if self._hsic is None:
            raise WorkbenchError("CKA got no batch of at least 4 samples for the unbiased estimator")
        return _normalise(self._hsic).cpu()


def _inputs(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


@torch.no_grad()
def cka_matrix(
    model: nn.Module,
    paths: Sequence[str],
    loader: Iterable[Any],
    device: torch.device | str,
    estimator: str = "biased",
    max_batches: int | None = None,
) -> Tensor:
    """L × L linear CKA between the outputs of the modules at ``paths``, in one pass over ``loader``.

    The loader yields ``(inputs, targets)`` or plain input tensors; only the inputs are used and
    are moved to ``device``, where the model must already be. The model runs in eval mode (its
    mode is restored after) and each batch's features of all paths are hooked in the same forward
    pass. ``max_batches`` caps the batches read. Returns a float64 tensor on the CPU;
    ``estimator`` is ``"biased"`` (full batch) or ``"unbiased"`` (minibatch HSIC₁).
    """
    acc = CKAAccumulator(estimator)
    was_training = model.training
    model.eval()
    try:
        with FeatureHooks(model, list(paths), detach=True) as feats:
            for b, batch in enumerate(loader):
                if max_batches is not None and b >= max_batches:
                    break
                model(_inputs(batch).to(device))
                acc.update([feats[p] for p in paths])
    finally:
        model.train(was_training)
    return acc.compute()
