import math

import pytest
import torch

from workbench.distill import ShapeError, joint_kd_loss, joint_labels, rotate_batch, rotation_labels, unrotated


def test_rotate_batch_hand_2x2_and_labels():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    x = torch.stack([a, b]).unsqueeze(1)  # (2, 1, 2, 2)
    y = torch.tensor([3, 0])
    x4, y4 = rotate_batch(x), joint_labels(y)
    assert x4.shape == (8, 1, 2, 2) and y4.tolist() == [12, 0, 13, 1, 14, 2, 15, 3]
    # counter-clockwise as displayed: the top row after 90° is the old right column
    expected = {
        0: ([[1, 2], [3, 4]], [[5, 6], [7, 8]]),
        1: ([[2, 4], [1, 3]], [[6, 8], [5, 7]]),
        2: ([[4, 3], [2, 1]], [[8, 7], [6, 5]]),
        3: ([[3, 1], [4, 2]], [[7, 5], [8, 6]]),
    }
    for r, (ea, eb) in expected.items():
        assert x4[2 * r, 0].tolist() == ea and y4[2 * r].item() == 4 * 3 + r
        assert x4[2 * r + 1, 0].tolist() == eb and y4[2 * r + 1].item() == 4 * 0 + r
    assert rotation_labels(2).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(y4 % 4, rotation_labels(2)) and torch.equal(y4 // 4, y.repeat(4))
    assert torch.equal(unrotated(x4), x) and torch.equal(unrotated(y4), 4 * y)


def test_fewer_rotations():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    assert rotate_batch(x, 2).shape == (2, 1, 2, 2)
    assert joint_labels(torch.tensor([1, 2]), 2).tolist() == [2, 4, 3, 5]


def test_joint_kd_hand_value():
    s = [[0.0, 1.0, 2.0, 0.5], [1.0, 0.0, -1.0, 0.0]]
    t = [[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 1.0]]
    T = 3.0
    want = 0.0
    for rs, rt in zip(s, t):
        es, et = [math.exp(v / T) for v in rs], [math.exp(v / T) for v in rt]
        ps, pt = [v / sum(es) for v in es], [v / sum(et) for v in et]
        want += T * T * sum(q * math.log(q / p) for p, q in zip(ps, pt)) / 2
    st = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    loss = joint_kd_loss(st, torch.tensor(t, dtype=torch.float64))
    assert loss.item() == pytest.approx(want, rel=1e-10)
    loss.backward()
    assert torch.isfinite(st.grad).all()
    assert joint_kd_loss(st, st.detach()).item() == pytest.approx(0.0, abs=1e-12)


def test_rotation_errors():
    with pytest.raises(ShapeError, match="square"):
        rotate_batch(torch.zeros(1, 1, 2, 3))
    with pytest.raises(ShapeError):
        rotate_batch(torch.zeros(1, 2, 2))
    with pytest.raises(ShapeError, match="multiple"):
        unrotated(torch.zeros(6, 3))
    with pytest.raises(ShapeError):
        joint_kd_loss(torch.zeros(4, 8), torch.zeros(4, 4))
