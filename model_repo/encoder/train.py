"""Train the sample text encoder contrastively on synthetic query/product pairs; write a build source.

    python model_repo/encoder/train.py [--out model_repo/encoder/inputs] [--seed 7] [--epochs 3]

Writes model.pt (TorchScript, traced in eval mode), calibration.npz, evaluation.npz and
train_report.json. Nothing is downloaded; the same seed gives identical weights.

The catalogue: 40 topics of 30 attribute tokens each. A product is 8 attributes of its topic,
3 of another topic and up to 4 generic tokens. Its query is 3-6 of those attributes, some swapped
for query-only synonyms, plus generic tokens and sometimes an unrelated attribute. Training uses
in-batch negatives (symmetric InfoNCE). evaluation.npz holds EVAL_PAIRS held-out queries followed
by their EVAL_PAIRS products (query i belongs to product EVAL_PAIRS + i); no row of it, nor of the
calibration set, occurs in training, and the two sets share no row.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "inputs"

TOPICS, WORDS_PER_TOPIC, SYNONYMS_PER_TOPIC = 40, 30, 15
FIRST_SYNONYM = 1 + TOPICS * WORDS_PER_TOPIC              # 1201: query-only synonyms
FIRST_GENERIC = FIRST_SYNONYM + TOPICS * SYNONYMS_PER_TOPIC  # 1801: generic words, anywhere
PRODUCT_MAIN, PRODUCT_OTHER, MAX_GENERIC = 8, 3, 4
SYNONYM_RATE = 0.35

TRAIN_PAIRS = 16_384
CALIBRATION_PAIRS = 256   # 256 queries + 256 products = 512 rows
EVAL_PAIRS = 1024         # 1024 queries + 1024 products = 2048 rows
BATCH = 256
LR = 3e-3
TEMPERATURE = 0.05
K = 10


def load_model_module():
    spec = importlib.util.spec_from_file_location("peakserve_sample_encoder_model", HERE / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compact(tokens: np.ndarray, rng: np.random.Generator, seq: int) -> np.ndarray:
    """Shuffle each row's tokens, move the padding (0) to the end, pad to seq columns."""
    keys = rng.random(tokens.shape) + (tokens == 0)  # pads sort last
    order = np.argsort(keys, axis=1, kind="stable")
    rows = np.take_along_axis(tokens, order, axis=1)
    out = np.zeros((len(tokens), seq), dtype=np.int64)
    out[:, :rows.shape[1]] = rows
    return out


def synthesize(rng: np.random.Generator, pairs: int, seq: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries int64 [pairs, seq], products int64 [pairs, seq]); row i of each is a matching pair."""
    assert FIRST_GENERIC < vocab
    topic = rng.integers(0, TOPICS, pairs)
    other = (topic + rng.integers(1, TOPICS, pairs)) % TOPICS
    main_words = np.argsort(rng.random((pairs, WORDS_PER_TOPIC)), axis=1)[:, :PRODUCT_MAIN]
    other_words = np.argsort(rng.random((pairs, WORDS_PER_TOPIC)), axis=1)[:, :PRODUCT_OTHER]
    attributes = np.concatenate([1 + topic[:, None] * WORDS_PER_TOPIC + main_words,
                                 1 + other[:, None] * WORDS_PER_TOPIC + other_words], axis=1)
    generic = rng.integers(FIRST_GENERIC, vocab, (pairs, MAX_GENERIC))
    generic[np.arange(MAX_GENERIC) >= rng.integers(0, MAX_GENERIC + 1, pairs)[:, None]] = 0
    products = _compact(np.concatenate([attributes, generic], axis=1), rng, seq)

    # Queries: 3-6 of the product's attributes, some as synonyms, plus noise.
    picked = np.take_along_axis(attributes, np.argsort(rng.random(attributes.shape), axis=1), axis=1)[:, :6]
    picked[np.arange(6) >= rng.integers(3, 7, pairs)[:, None]] = 0
    word = (picked - 1) % WORDS_PER_TOPIC
    synonym = FIRST_SYNONYM + (picked - 1) // WORDS_PER_TOPIC * SYNONYMS_PER_TOPIC + word
    swap = (picked > 0) & (word < SYNONYMS_PER_TOPIC) & (rng.random(picked.shape) < SYNONYM_RATE)
    picked = np.where(swap, synonym, picked)
    query_generic = rng.integers(FIRST_GENERIC, vocab, (pairs, 2))
    query_generic[np.arange(2) >= rng.integers(0, 3, pairs)[:, None]] = 0
    stray = np.where(rng.random(pairs) < 0.2, rng.integers(1, FIRST_SYNONYM, pairs), 0)[:, None]
    queries = _compact(np.concatenate([picked, query_generic, stray], axis=1), rng, seq)
    return queries, products


def _row_keys(a: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in a}


def _not_in(a: np.ndarray, keys: set[bytes]) -> np.ndarray:
    return np.array([row.tobytes() not in keys for row in a], dtype=bool)


def make_splits(seed: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    """Held-out evaluation pairs, calibration rows and training pairs, with no row shared between sets."""
    rng = np.random.default_rng(seed)
    eval_q, eval_p = synthesize(rng, EVAL_PAIRS, seq, vocab)
    held_out = _row_keys(eval_q) | _row_keys(eval_p)
    cal_q, cal_p = synthesize(rng, 2 * CALIBRATION_PAIRS, seq, vocab)  # spares for rows that collide
    calibration = np.concatenate([cal_q[_not_in(cal_q, held_out)][:CALIBRATION_PAIRS],
                                  cal_p[_not_in(cal_p, held_out)][:CALIBRATION_PAIRS]])
    held_out |= _row_keys(calibration)
    train_q, train_p = synthesize(rng, TRAIN_PAIRS + TRAIN_PAIRS // 8, seq, vocab)
    fresh = _not_in(train_q, held_out) & _not_in(train_p, held_out)
    return {"eval_queries": eval_q, "eval_products": eval_p, "calibration": calibration,
            "train_queries": train_q[fresh][:TRAIN_PAIRS], "train_products": train_p[fresh][:TRAIN_PAIRS]}


def _trim(token_ids: np.ndarray) -> np.ndarray:
    used = (token_ids != 0).any(axis=0)
    return np.ascontiguousarray(token_ids[:, :int(used.nonzero()[0].max()) + 1])


def recall_at_k(queries: np.ndarray, products: np.ndarray, k: int = K) -> float:
    """Share of queries whose own product (same row) is among the k products of highest cosine."""
    sims = queries @ products.T
    own = np.diagonal(sims)[:, None]
    rank = (sims > own).sum(axis=1)
    return float((rank < k).mean())


def embed(model: torch.nn.Module, token_ids: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(token_ids)).numpy()


def trace(model: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript of the eval-mode model (the batch dimension stays symbolic in the traced graph)."""
    model.eval()
    with warnings.catch_warnings():
        # TorchScript is deprecated in torch 2.15 but is still what this build source format is.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        with torch.no_grad():
            return torch.jit.trace(model, example)


def save_torchscript(module: torch.jit.ScriptModule, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        torch.jit.save(module, str(path))


def weights_sha256(model: torch.nn.Module) -> str:
    """Digest of every tensor of the state dict, in order: equal digests mean identical weights."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # NaN-filling every new tensor is slow
    torch.set_flush_denormal(True)  # Adam's tiny second moments are denormal: sqrt() on them is very slow
    started = time.perf_counter()

    mod = load_model_module()
    data = make_splits(args.seed, mod.SEQ, mod.VOCAB)
    model = mod.build_model()
    untrained = recall_at_k(embed(model, data["eval_queries"]), embed(model, data["eval_products"]))

    # Padding is masked and there are no positions, so trailing all-pad columns change nothing:
    # training drops them (queries have <= 9 tokens, products <= 15) and runs 2-3x faster.
    queries, products = (torch.from_numpy(_trim(data["train_queries"])),
                         torch.from_numpy(_trim(data["train_products"])))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    shuffle = torch.Generator().manual_seed(args.seed)
    targets = torch.arange(BATCH)
    epoch_digests = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(queries), generator=shuffle)
        running, steps = 0.0, 0
        for start in range(0, len(order) - BATCH + 1, BATCH):  # full batches: same count of negatives
            idx = order[start:start + BATCH]
            logits = model(queries[idx]) @ model(products[idx]).T / TEMPERATURE
            loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
            steps += 1
        print(f"encoder epoch {epoch}/{args.epochs} InfoNCE loss {running / steps:.4f} "
              f"({time.perf_counter() - started:.1f}s)", flush=True)
        epoch_digests.append(weights_sha256(model))

    recall = recall_at_k(embed(model, data["eval_queries"]), embed(model, data["eval_products"]))
    evaluation = np.concatenate([data["eval_queries"], data["eval_products"]])
    scripted = trace(model, torch.from_numpy(data["calibration"][:8]))
    train_seconds = time.perf_counter() - started

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    save_torchscript(scripted, out / "model.pt")
    np.savez(out / "calibration.npz", token_ids=data["calibration"])
    np.savez(out / "evaluation.npz", token_ids=evaluation)
    report = {
        "model": "encoder",
        "seed": args.seed,
        "epochs": args.epochs,
        "rows": {"train_pairs": len(queries), "calibration": len(data["calibration"]),
                 "evaluation": len(evaluation)},
        "evaluation_layout": f"rows 0..{EVAL_PAIRS - 1} are queries, row {EVAL_PAIRS} + i is the product of query i",
        "heldout": {
            f"recall_at_{K}": round(recall, 4),
            f"recall_at_{K}_untrained": round(untrained, 4),
            f"recall_at_{K}_chance": round(K / EVAL_PAIRS, 4),
            "candidates": EVAL_PAIRS,
        },
        # sha256 of the weights after each epoch: equal across runs with the same seed (see the tests).
        "weights_sha256_by_epoch": epoch_digests,
        "train_seconds": round(train_seconds, 2),
        "torch": torch.__version__,
    }
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"encoder held-out recall@{K} {recall:.4f} (untrained {untrained:.4f}, chance {K / EVAL_PAIRS:.4f}); "
          f"{train_seconds:.1f}s -> {out}", flush=True)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
