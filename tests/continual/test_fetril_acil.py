"""FeTrIL and ACIL through the built strategies on hand-made features: the translation formula, frozen backbone
weights, the classifier's training set (real + pseudo), and ACIL's recursive = joint least squares."""

from __future__ import annotations

import torch
from cil_helpers import build_cil, tensor_stream, train_task

from continual.acil import RecursiveLeastSquares
from continual.fetril import pseudo_features
from workbench.models import build_model

TASKS = [[0, 1, 2], [3, 4]]


def test_pseudo_features_translate_the_closest_new_class_by_the_mean_difference() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(9, 3, generator=g)
    labels = torch.tensor([3, 3, 3, 3, 4, 4, 4, 4, 4])
    means = {0: torch.tensor([1.0, 0.0, 0.0]), 1: torch.tensor([-2.0, 5.0, 1.0])}
    means[3] = feats[labels == 3].mean(0)
    means[4] = feats[labels == 4].mean(0) + torch.tensor([-3.0, 5.0, 1.0])  # class 4's mean is nearest to μ_1
    pf, py = pseudo_features(feats, labels, means, [0, 1], [3, 4], "closest")
    c0 = 3 if (means[0] - means[3]).norm() < (means[0] - means[4]).norm() else 4
    want0 = feats[labels == c0] + means[0] - means[c0]
    want1 = feats[labels == 4] + means[1] - means[4]
    assert torch.allclose(pf, torch.cat([want0, want1]))
    assert py.tolist() == [0] * len(want0) + [1] * len(want1)
    pr, yr = pseudo_features(feats, labels, means, [0, 1], [3, 4], "random", torch.Generator().manual_seed(1))
    assert len(pr) == len(yr) and set(yr.tolist()) == {0, 1}


def _features(per_class: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = 4.0 * torch.randn(5, 4, generator=g)
    y = torch.arange(5).repeat_interleave(per_class)
    return (means[y] + 0.3 * torch.randn(len(y), 4, generator=g)).view(-1, 1, 2, 2), y


def _run(method: str, backbone_hidden: tuple[int, ...], *overrides: str):
    x, y = _features()
    stream = tensor_stream(x, y, TASKS)
    torch.manual_seed(0)
    backbone = build_model("mlp", num_classes=5, in_channels=1, hidden=backbone_hidden, input_size=2)
    s = build_cil(method, stream, backbone, *overrides)
    train_task(s, stream, 0)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    train_task(s, stream, 1)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"backbone {k} changed after task 0"
    return s, x, y


def test_fetril_frozen_backbone_and_a_classifier_on_real_plus_pseudo_features() -> None:
    s, x, y = _run("fetril", (8,), "fetril.clf_epochs=40")
    assert s.fit_sizes == {"real": 40, "pseudo": 60}  # 2 new classes × 20 real; 3 old classes × 20 translated
    assert all(not p.requires_grad for p in s.backbone.parameters())
    s.model.eval()
    with torch.no_grad():
        feats = s.model.features(x)
        pred = s.model(x).argmax(1)
    for c in TASKS[0]:  # old-class means are where the classifier was taught them (from pseudo-features only)
        assert torch.allclose(s.means[c], feats[y == c].mean(0), atol=1e-5)
    assert float((pred == y).float().mean()) > 0.6


def test_acil_recursive_equals_joint_least_squares_float64() -> None:
    g = torch.Generator().manual_seed(0)
    dim, outputs, gamma = 12, 5, 0.3
    blocks = [
        (
            torch.randn(n, dim, generator=g, dtype=torch.float64),
            torch.randn(n, outputs, generator=g, dtype=torch.float64),
        )
        for n in (7, 15, 4, 30)
    ]
    rls = RecursiveLeastSquares(dim, outputs, gamma)
    for x, y in blocks:
        rls.update(x, y)
    X = torch.cat([b[0] for b in blocks])
    Y = torch.cat([b[1] for b in blocks])
    joint = torch.linalg.solve(X.T @ X + gamma * torch.eye(dim, dtype=torch.float64), X.T @ Y)
    assert torch.allclose(rls.W, joint, atol=1e-6, rtol=0)
    assert torch.allclose(rls.R, torch.linalg.inv(X.T @ X + gamma * torch.eye(dim, dtype=torch.float64)), atol=1e-6)


def test_acil_strategy_classifier_is_the_joint_ridge_solution_on_all_tasks() -> None:
    s, x, y = _run("acil", (8,), "acil.buffer=32", "acil.gamma=0.5")
    s.model.eval()
    with torch.no_grad():
        feats = s.model.expand(s.model.feature_extractor(x)).double()
        joint = torch.linalg.solve(
            feats.T @ feats + 0.5 * torch.eye(32, dtype=torch.float64),
            feats.T @ torch.nn.functional.one_hot(y, 5).double(),
        )
        assert torch.allclose(s.model.weight, joint, atol=1e-6, rtol=0)
        assert torch.allclose(s.model(x), (feats @ joint).float(), atol=1e-4)
        assert float((s.model(x).argmax(1) == y).float().mean()) > 0.6
