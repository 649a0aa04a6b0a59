"""The ranker's losses: candidates are compared only within one list, never across entities.

What: :func:`pad_lists` lays a batch of lists out as a row-index matrix ``int64 [B, Lmax]`` plus a
validity mask ``bool [B, Lmax]``; :func:`listwise_loss` (softmax cross-entropy per list) and
:func:`pairwise_loss` (RankNet logistic loss over the pairs of one list) take ``scores``,
``labels``, ``weights`` ``float [B, L]`` and the mask, and return a scalar tensor.

Why within lists: one list is one entity's (or one session's) candidates; a pair of candidates of
two entities says nothing about either entity's order. Positives carry the dataset's
inverse-propensity weight (a click at rank 9 counts more than one at rank 1), negatives weigh 1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pad_lists(offsets: np.ndarray, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-index matrix ``int64 [B, Lmax]`` and validity mask ``bool [B, Lmax]`` of ``lists``.

    Padded cells point at row 0 and are masked; the losses never let a padded cell or another
    list's row enter a list's softmax or pairs.
    """
    starts = offsets[lists]
    sizes = offsets[np.asarray(lists) + 1] - starts
    width = int(sizes.max()) if len(sizes) else 0
    ar = np.arange(width)
    mask = ar[None, :] < sizes[:, None]
    idx = np.where(mask, starts[:, None] + ar[None, :], 0)
    return idx.astype(np.int64), mask


# --- losses (within each list only) -------------------------------------------------------------
def listwise_loss(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each list (ListNet with one-hot-like targets), IPS-weighted.

    ``scores``, ``labels``, ``weights`` float [B, L], ``mask`` bool [B, L]. Per list
    ``-sum_i w_i y_i log softmax(s)_i`` over that list's valid cells only; summed over lists and
    divided by the number of positive cells, so a positive of weight 3 counts three times one of
    weight 1 wherever it sits, and a batch's size does not change the loss scale.
    """
    s = scores.masked_fill(~mask, float("-inf"))
    logp = s - torch.logsumexp(s, dim=1, keepdim=True)
    gain = labels * weights * mask
    logp = logp.masked_fill(~mask, 0.0)
    n_pos = (labels * mask > 0).sum().clamp_min(1)
    return -(gain * logp).sum() / n_pos


def pairwise_loss(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """RankNet logistic loss over pairs ``(i, j)`` of the *same list* with ``y_i > y_j``.

    Each pair costs ``w_i * softplus(s_j - s_i)`` (the better item's IPS weight); the mean is over
    pairs. Pairs are formed inside each ``[L, L]`` block of a list, so items of different
    entities never meet.
    """
    diff = scores[:, :, None] - scores[:, None, :]  # s_i - s_j
    valid = mask[:, :, None] & mask[:, None, :]
    pair = (labels[:, :, None] > labels[:, None, :]) & valid
    wp = weights[:, :, None] * pair
    return (F.softplus(-diff) * wp).sum() / pair.sum().clamp_min(1)


LOSSES = {"listwise": listwise_loss, "pairwise": pairwise_loss}
