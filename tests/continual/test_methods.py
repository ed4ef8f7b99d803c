"""eTag's and IR's building blocks on hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from continual.etag import cvae_kl, generator_distill, generator_loss_terms, reconstruction_loss, task_oriented_ce
from continual.ir import class_prototypes, nearest_prototype, prototype_scores, sdc_shift
from continual.models import ETagNet, FeatureCVAE, RotationBranches
from continual.plugins import UNSEEN, SeenClassesPlugin, mask_unseen
from workbench.distill import joint_labels, rotate_batch, unrotated
from workbench.models import build_model


def test_rotation_expansion_and_joint_labels_via_core() -> None:
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).view(2, 1, 2, 2)
    xr = rotate_batch(x)
    assert xr.shape == (8, 1, 2, 2)
    assert torch.equal(unrotated(xr), x)
    # rows 2..3 are the 90° rotations, counter-clockwise as displayed
    assert torch.equal(xr[2, 0], torch.tensor([[1.0, 3.0], [0.0, 2.0]]))
    assert joint_labels(torch.tensor([3, 0])).tolist() == [12, 0, 13, 1, 14, 2, 15, 3]


def test_rotation_branches_copy_the_remaining_stages() -> None:
    torch.manual_seed(0)
    backbone = build_model("small_cnn", num_classes=6, in_channels=1)
    branches = RotationBranches(backbone, num_classes=6)
    # stage 1 → copies of layer2, layer3; stage 2 → copy of layer3; stage 3 → pool + linear only
    assert [len(b) for b in branches.branches] == [4, 3, 2]
    assert branches.branches[0][0] is not backbone.layer2
    assert torch.equal(branches.branches[0][0][0].weight, backbone.layer2[0].weight)
    net = ETagNet(backbone, num_classes=6)
    logits, f, aux = net.forward_all(torch.randn(8, 1, 12, 12))
    assert logits.shape == (8, 6) and f.shape == (8, backbone.feature_dim)
    assert [a.shape for a in aux] == [torch.Size([8, 24])] * 3
    assert torch.allclose(backbone.fc(f), logits, atol=1e-6)


def test_cvae_kl_and_reconstruction_by_hand() -> None:
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    # sample 1: -½[(1+0-1-1) + (1+ln4-0-4)] ; sample 2: -½[(1-1) + (1+0-4-1)]
    k1 = -0.5 * ((1 + 0 - 1 - 1) + (1 + math.log(4) - 0 - 4))
    k2 = -0.5 * ((1 + 0 - 0 - 1) + (1 + 0 - 4 - 1))
    assert float(cvae_kl(mu, logvar)) == pytest.approx((k1 + k2) / 2)
    assert float(cvae_kl(torch.zeros(3, 5), torch.zeros(3, 5))) == 0.0
    recon, f = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert float(reconstruction_loss(recon, f)) == pytest.approx((1 + 4 + 9) / 2)


def test_task_oriented_ce_weights_by_old_units() -> None:
    head = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 2))
    feats, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    old_feats, y_old = torch.tensor([[0.0, 1.0]]), torch.tensor([2])
    ce_new = F.cross_entropy(head(feats), y)
    ce_old = F.cross_entropy(head(old_feats), y_old)
    assert float(task_oriented_ce(head, feats, y, 0.0).detach()) == pytest.approx(float(ce_new.detach()))
    k = 3.0
    got = task_oriented_ce(head, feats, y, k, old_feats, y_old)
    assert float(got.detach()) == pytest.approx(float((ce_new / 4 + 3 / 4 * ce_old).detach()))
    # with ``seen`` the softmax ignores unseen class 1: CE over logits [2, 0] (class 0, 2) for the new sample
    masked = task_oriented_ce(head, feats, y, 0.0, seen=[0, 2])
    assert float(masked.detach()) == pytest.approx(math.log(1 + math.exp(-2.0)))


def test_mask_unseen_and_seen_classes_plugin() -> None:
    logits = torch.tensor([[1.0, 5.0, 2.0, 9.0]])
    out = mask_unseen(logits, [0, 2])
    assert out.tolist() == [[1.0, UNSEEN, 2.0, UNSEEN]] and logits[0, 1] == 5.0
    plugin = SeenClassesPlugin([[3, 1], [0, 2]])

    class Strategy:
        mb_output = logits.clone()

    plugin.after_eval_forward(Strategy)
    assert Strategy.mb_output.argmax(1).item() == 3  # task 0 sees classes 3 and 1
    plugin.task, Strategy.mb_output = 1, torch.tensor([[1.0, 0.0, 2.0, 0.5]])
    plugin.after_eval_forward(Strategy)
    assert plugin.seen() == [3, 1, 0, 2] and Strategy.mb_output.argmax(1).item() == 2


def test_generator_distill_and_terms() -> None:
    new, old = torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert float(generator_distill(new, old, k=2.0)) == pytest.approx(1e-3 * 2 * (2 + 4))
    torch.manual_seed(0)
    gen = FeatureCVAE(feature_dim=4, num_classes=3, hidden=8, latent=2)
    head = nn.Linear(4, 3)
    f, y = torch.rand(5, 4), torch.tensor([2, 2, 2, 2, 2])
    terms = generator_loss_terms(gen, head, f, y, k=0.0)
    assert set(terms) == {"recon", "kl", "ce", "distill"} and float(terms["distill"]) == 0.0
    # identical previous generator: zero distillation; the CE now includes generated old classes
    prev = FeatureCVAE(feature_dim=4, num_classes=3, hidden=8, latent=2)
    prev.load_state_dict(gen.state_dict())
    terms = generator_loss_terms(gen, head, f, y, k=2.0, old_classes=torch.tensor([0, 1]), prev_generator=prev)
    assert float(terms["distill"]) == 0.0
    for p in gen.decoder[-2].parameters():
        p.data.add_(1.0)
    terms = generator_loss_terms(gen, head, f, y, k=2.0, old_classes=torch.tensor([0, 1]), prev_generator=prev)
    assert float(terms["distill"]) > 0.0
    assert (gen.sample(torch.tensor([0, 1])) >= 0).all()


def test_class_prototypes_are_class_means() -> None:
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0], [9.0, 9.0]])
    labels = torch.tensor([5, 5, 7, 7, 8])
    protos = class_prototypes(feats, labels, [7, 5])
    assert protos.tolist() == [[0.0, 3.0], [2.0, 0.0]]
    with pytest.raises(ValueError, match="class 1"):
        class_prototypes(feats, labels, [1])


def test_nearest_prototype_cosine_and_l2() -> None:
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 10.0], [5.0, 0.0]])
    available = torch.tensor([True, True, True, False])
    feats = torch.tensor([[3.0, 0.1], [0.3, 0.01], [0.1, 5.0]])
    # cosine: direction only; class 3 (same direction as row 0) is not available yet
    assert nearest_prototype(feats, protos, available, "cosine").tolist() == [0, 0, 1]
    # L2: magnitude matters
    assert nearest_prototype(feats, protos, available, "l2").tolist() == [0, 0, 1]
    far = torch.tensor([[8.0, 9.0]])
    assert nearest_prototype(far, protos, available, "l2").tolist() == [2]
    assert nearest_prototype(far, protos, available, "cosine").tolist() == [2]
    scores = prototype_scores(feats, protos, available, "l2")
    assert scores[0, 1] == pytest.approx(-math.dist([3.0, 0.1], [0.0, 1.0]))
    assert (scores[:, 3] == UNSEEN).all()


def test_sdc_shift_moves_prototypes_with_nearby_drift() -> None:
    old = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    new = torch.tensor([[1.0, 0.0], [10.0, 3.0]])
    protos = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    shift = sdc_shift(old, new, protos, sigma=1.0)
    assert torch.allclose(shift, torch.tensor([[1.0, 0.0], [0.0, 3.0]]), atol=1e-6)
    # a wide kernel averages both drifts
    assert torch.allclose(sdc_shift(old, new, protos, sigma=1e4), torch.tensor([[0.5, 1.5]] * 2), atol=1e-4)
