"""Small text encoder for query/product retrieval: the sample model for `task: embedding` builds.

Signature (batch dimension first, as Triton serves it with maxBatchSize > 0):
  token_ids  INT64 [32]  token ids in [0, VOCAB), right-padded with PAD (0); ids >= VOCAB are hashed (mod VOCAB)
  embedding  FP32  [64]  L2-normalised; cosine similarity = dot product

token embedding (64) -> 2 transformer encoder layers (d_model 64, 4 heads, feed-forward 128, post-norm,
ReLU: the math of nn.TransformerEncoderLayer) with padded keys masked -> mean over the non-pad tokens
-> linear -> L2 normalisation. There are no position embeddings: the synthetic "text" is a bag of
attribute tokens. An all-padding row (Triton's zero-filled warmup) gives a finite vector, not NaN.

The layers are written out with plain tensor ops rather than nn.TransformerEncoder: a traced
nn.MultiheadAttention does not export to ONNX from TorchScript ("transpose for tensor of unknown
rank"), and the builder receives this model as TorchScript. Every reshape here names its rank and
every dimension index is positive, so the exporter never needs shapes the archive does not keep.
This file imports only torch.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 2000
PAD = 0
SEQ = 32
DIM = 64
HEADS = 4
FEEDFORWARD = 128
LAYERS = 2


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer: x + attention -> LayerNorm -> x + feed-forward -> LayerNorm."""

    def __init__(self, dim: int, heads: int, feedforward: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.feedforward = nn.Sequential(nn.Linear(dim, feedforward), nn.ReLU(), nn.Linear(feedforward, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]; key_bias [B, 1, 1, L], 0 for real keys and MASKED for padding."""
        b, length, dim = x.shape
        q, k, v = (t.reshape(b, length, self.heads, self.head_dim).transpose(1, 2)   # [B, H, L, Dh]
                   for t in self.qkv(x).chunk(3, dim=2))
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale + key_bias          # [B, H, L, L]
        context = torch.matmul(torch.softmax(scores, dim=3), v)                      # [B, H, L, Dh]
        x = self.norm1(x + self.out(context.transpose(1, 2).reshape(b, length, dim)))
        return self.norm2(x + self.feedforward(x))


# Added to the scores of padded keys: exp() underflows to exactly 0, and it stays finite in fp16.
MASKED = -1.0e4


class TextEncoder(nn.Module):
    def __init__(self, vocab: int = VOCAB, dim: int = DIM, heads: int = HEADS, feedforward: int = FEEDFORWARD,
                 layers: int = LAYERS) -> None:
        super().__init__()
        self.vocab = vocab
        self.token_embedding = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, feedforward) for _ in range(layers))
        self.projection = nn.Linear(dim, dim)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        ids = torch.remainder(token_ids, self.vocab)
        is_pad = ids == PAD                                                         # [B, L]
        # Position 0 is never masked as a key, so an all-padding row still attends to something.
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        key_bias = ((is_pad & (positions > 0)).to(torch.float32) * MASKED).unsqueeze(1).unsqueeze(2)
        h = self.token_embedding(ids)
        for layer in self.layers:
            h = layer(h, key_bias)
        keep = (~is_pad).unsqueeze(2).to(h.dtype)
        pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return nn.functional.normalize(self.projection(pooled), dim=1)


def build_model() -> nn.Module:
    """The untrained encoder."""
    return TextEncoder()
