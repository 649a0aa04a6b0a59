"""The two-tower training task: the loss, held apart from the towers (torchrec style).

In-batch sampled softmax: for a batch of B positive pairs (entity_i, candidate_i), row i scores
entity_i against every candidate in the batch; the softmax should pick candidate_i. Because
the in-batch candidates are sampled in proportion to their popularity, popular candidates are
over-represented as negatives; the log-Q correction (Yi et al., RecSys 2019) subtracts
``log q_j`` (the candidate's sampling frequency among the training positives) from every
in-batch logit so the model learns affinity, not "avoid popular items". A second copy of the
same candidate in the batch is not a negative for row i and is masked out.

The dataset's hard negatives (shown but not acted on) are appended as extra logits per row;
they are not popularity-sampled, so they carry no log-Q term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from startup_recs.models.two_tower import SideTensors, TwoTowerModel


def sampled_softmax_loss(
    entity: torch.Tensor,
    candidate: torch.Tensor,
    candidate_keys: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
    hard: torch.Tensor | None = None,
    hard_valid: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean cross-entropy of in-batch softmax (+ hard negatives). Pure function.

    entity, candidate: [B, d] (L2-normalised); candidate_keys: [B] int64 (equal keys = same
    candidate, masked as negatives); log_q: [B] log sampling probability of each in-batch
    candidate; hard: [B, k, d] hard-negative vectors per row with hard_valid [B, k] bool;
    weights: [B] per-positive weight. Returns a scalar float32 tensor.
    """
    entity = entity.float() / temperature  # scale B rows, not the [B, B] logits
    candidate = candidate.float()
    logits = entity @ candidate.T  # [B, B]
    if log_q is not None:
        logits = logits - log_q.float()[None, :]
    same = candidate_keys[None, :] == candidate_keys[:, None]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    if hard is not None and hard.shape[1] > 0:
        hard_logits = torch.einsum("bd,bkd->bk", entity, hard.float())
        if hard_valid is not None:
            hard_logits = hard_logits.masked_fill(~hard_valid, float("-inf"))
        logits = torch.cat([logits, hard_logits], dim=1)
    target = torch.arange(logits.shape[0], device=logits.device)
    ce = F.cross_entropy(logits, target, reduction="none")
    if weights is None:
        return ce.mean()
    w = weights.float()
    return (ce * w).sum() / w.sum().clamp_min(1e-12)


class RetrievalTask(nn.Module):
    """Wraps the towers with the loss. ``forward`` returns the scalar training loss.

    ``log_q``: [n_candidate_rows] float32, log sampling frequency of each candidate row among the
    training positives (buffer, so it follows ``.to(device)``); ``id_dropout``: probability of
    replacing an id by 0 (unknown) during training, so the feature part learns to stand alone.
    """

    def __init__(self, model: TwoTowerModel, temperature: float, log_q: torch.Tensor | None,
                 id_dropout: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        self.id_dropout = float(id_dropout)
        self.use_log_q = log_q is not None
        self.register_buffer("log_q", log_q if log_q is not None else torch.zeros(0), persistent=False)

    def _drop_ids(self, x: SideTensors, tower: nn.Module) -> SideTensors:
        if not self.training or self.id_dropout <= 0 or getattr(tower, "mlp", None) is None:
            return x  # an id-only tower has no feature part to fall back to
        keep = torch.rand(x.ids.shape, device=x.ids.device) >= self.id_dropout
        return x.with_ids(x.ids * keep)

    def forward(self, entity: SideTensors, candidate: SideTensors, candidate_rows: torch.Tensor,
                weights: torch.Tensor | None = None, hard: SideTensors | None = None,
                hard_valid: torch.Tensor | None = None) -> torch.Tensor:
        """entity/candidate: B rows; candidate_rows [B] int64 (candidate table rows, the masking
        key and log-Q index); hard: B*k rows with hard_valid [B, k]."""
        e = self.model.entity_tower(self._drop_ids(entity, self.model.entity_tower))
        c = self.model.candidate_tower(self._drop_ids(candidate, self.model.candidate_tower))
        h = None
        if hard is not None and hard_valid is not None:
            h = self.model.candidate_tower(self._drop_ids(hard, self.model.candidate_tower)).view(hard_valid.shape[0], hard_valid.shape[1], -1)
        log_q = self.log_q[candidate_rows] if self.use_log_q else None
        return sampled_softmax_loss(e, c, candidate_rows, self.temperature, log_q, h, hard_valid, weights)
