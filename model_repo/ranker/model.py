"""DeepFM-style click-through-rate ranker: the sample model for `task: ranker` builds.

Signature (batch dimension first, as Triton serves it with maxBatchSize > 0):
  sparse_ids  INT64 [26]  one id per categorical field; ids are hashed into VOCAB buckets (id mod VOCAB)
  dense       FP32  [13]  numeric features, already standardised (mean 0, variance 1)
  score       FP32  [1]   click probability in (0, 1)

The logit is bias + first-order terms + the FM pairwise interaction of the field embeddings
+ an MLP over [embeddings, dense]. This file imports only torch: the model builder loads it by
path and calls build_model() to get the module the state dict loads into.
"""

from __future__ import annotations

import torch
from torch import nn

FIELDS = 26
VOCAB = 1000
DENSE = 13
DIM = 32
HIDDEN = (1024, 512, 256)


class DeepFM(nn.Module):
    def __init__(self, fields: int = FIELDS, vocab: int = VOCAB, dense: int = DENSE, dim: int = DIM,
                 hidden: tuple[int, ...] = HIDDEN) -> None:
        super().__init__()
        self.fields, self.vocab = fields, vocab
        # One table for all fields; field f owns rows [f*vocab, (f+1)*vocab).
        self.register_buffer("offsets", torch.arange(fields, dtype=torch.int64) * vocab, persistent=False)
        self.embedding = nn.Embedding(fields * vocab, dim)
        self.first_order = nn.Embedding(fields * vocab, 1)
        self.dense_linear = nn.Linear(dense, 1)
        width = fields * dim + dense
        # Embedding entries (~0.03) are thirty times smaller than standardised dense features (~1).
        # Int8 serving quantizes the MLP input with one scale per tensor, which would round the
        # embeddings away; normalising each input feature first keeps them all on one scale.
        layers: list[nn.Module] = [nn.BatchNorm1d(width)]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        nn.init.normal_(self.embedding.weight, std=0.01)
        nn.init.zeros_(self.first_order.weight)

    def forward(self, sparse_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        rows = torch.remainder(sparse_ids, self.vocab) + self.offsets          # [B, F]
        emb = self.embedding(rows)                                              # [B, F, D]
        linear = self.first_order(rows).sum(dim=1) + self.dense_linear(dense)  # [B, 1]
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_squares = emb.pow(2).sum(dim=1)
        fm = 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)   # [B, 1]
        deep = self.mlp(torch.cat([emb.flatten(1), dense], dim=1))             # [B, 1]
        return torch.sigmoid(linear + fm + deep)


def build_model() -> nn.Module:
    """The untrained ranker; load state_dict.pt into it."""
    return DeepFM()
