"""The sampled-softmax loss against hand-computed values (log-Q, duplicates, hard negatives, weights)."""

from __future__ import annotations

import math

import pytest
import torch

from startup_recs.train.two_tower_loss import sampled_softmax_loss

torch.set_num_threads(1)

E = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
C = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # dot products: [[1, .6], [0, .8]]


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def test_plain_in_batch_softmax_matches_hand_computation() -> None:
    loss = sampled_softmax_loss(E, C, torch.tensor([0, 1]), temperature=1.0)
    want = (_ce([1.0, 0.6], 0) + _ce([0.0, 0.8], 1)) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6)


def test_temperature_scales_logits() -> None:
    loss = sampled_softmax_loss(E, C, torch.tensor([0, 1]), temperature=0.5)
    want = (_ce([2.0, 1.2], 0) + _ce([0.0, 1.6], 1)) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6)


def test_log_q_subtracts_log_frequency_from_each_candidate_column() -> None:
    # candidate 0 is popular (q=.8), candidate 1 rare (q=.2): its logits rise relative to 0's.
    log_q = torch.log(torch.tensor([0.8, 0.2]))
    loss = sampled_softmax_loss(E, C, torch.tensor([0, 1]), temperature=1.0, log_q=log_q)
    lq = [math.log(0.8), math.log(0.2)]
    want = (_ce([1.0 - lq[0], 0.6 - lq[1]], 0) + _ce([0.0 - lq[0], 0.8 - lq[1]], 1)) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6)
    # Row 0's positive is the popular one: the correction makes it harder (higher loss) ...
    row0 = sampled_softmax_loss(E[:1].repeat(2, 1), C, torch.tensor([0, 1]), 1.0, log_q=log_q, weights=torch.tensor([1.0, 0.0]))
    row0_plain = sampled_softmax_loss(E[:1].repeat(2, 1), C, torch.tensor([0, 1]), 1.0, weights=torch.tensor([1.0, 0.0]))
    assert row0.item() > row0_plain.item()
    # ... and a uniform q changes nothing (softmax is shift-invariant).
    uniform = sampled_softmax_loss(E, C, torch.tensor([0, 1]), 1.0, log_q=torch.log(torch.tensor([0.5, 0.5])))
    assert uniform.item() == pytest.approx(sampled_softmax_loss(E, C, torch.tensor([0, 1]), 1.0).item(), abs=1e-6)


def test_same_candidate_twice_in_a_batch_is_not_a_negative() -> None:
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = sampled_softmax_loss(e, c, torch.tensor([7, 7]), temperature=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # only the positive remains per row


def test_hard_negatives_are_extra_logits_and_invalid_ones_are_masked() -> None:
    hard = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])  # [B=2, k=1, d]: dots 0 and 0
    valid = torch.tensor([[True], [False]])
    loss = sampled_softmax_loss(E, C, torch.tensor([0, 1]), 1.0, hard=hard, hard_valid=valid)
    want = (_ce([1.0, 0.6, 0.0], 0) + _ce([0.0, 0.8], 1)) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6)


def test_weights_give_a_weighted_mean() -> None:
    w = torch.tensor([3.0, 1.0])
    loss = sampled_softmax_loss(E, C, torch.tensor([0, 1]), 1.0, weights=w)
    want = (3 * _ce([1.0, 0.6], 0) + _ce([0.0, 0.8], 1)) / 4
    assert loss.item() == pytest.approx(want, abs=1e-6)


def test_gradient_pulls_positive_together() -> None:
    e = E.clone().requires_grad_(True)
    sampled_softmax_loss(e, C, torch.tensor([0, 1]), 1.0).backward()
    # Moving entity 1 toward its positive (0.6, 0.8) lowers the loss: the gradient points away.
    assert (e.grad[1] @ C[1]).item() < 0
