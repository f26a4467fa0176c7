"""Train the sample CTR ranker on synthetic clicks and write a `spec.build.source` directory.

    python model_repo/ranker/train.py [--out model_repo/ranker/inputs] [--seed 7] [--epochs 1]
                                      [--shuffle-columns SEED]

Writes model.py (the factory), state_dict.pt, calibration.npz, evaluation.npz (with `label`) and
train_report.json. Nothing is downloaded; the same seed gives byte-identical weights.

--shuffle-columns SEED trains the same architecture on the same rows with their feature columns
permuted (the sparse fields among themselves, the dense features among themselves; every column
moves). Served the correctly ordered inputs, that model answers with plausible click
probabilities that rank badly: the bad canary of the rollout analysis tests. Its calibration and
evaluation files hold the correctly ordered rows (what it will be served), and its report's
held-out figures are measured on them.

The clicks come from a hidden logistic model: per-id weights on a few fields, one pairwise field
interaction, linear and quadratic dense terms, plus logit noise. Ids follow a Zipf-like law, as in
real catalogues, so the head is learnable and the tail is noise. The evaluation rows (and the
calibration rows) are drawn separately from the training rows and never trained on.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "inputs"

TRAIN_ROWS = 96_000
CALIBRATION_ROWS = 512
EVALUATION_ROWS = 4096
BATCH = 512
LR = 1e-3

# The id tables memorise the training rows quickly: with the normalised MLP input, held-out AUC
# peaks after one epoch and falls after that.


def load_model_module():
    spec = importlib.util.spec_from_file_location("peakserve_sample_ranker_model", HERE / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthesize(seed: int, rows: int, fields: int, vocab: int, dense_dim: int):
    """(sparse_ids int64 [rows, fields], dense float32 [rows, dense_dim], label float32 [rows], p_true)."""
    truth_seed, data_seed = np.random.SeedSequence(seed).spawn(2)
    truth, rng = np.random.default_rng(truth_seed), np.random.default_rng(data_seed)
    # The hidden ground truth: only a few fields and dense features matter.
    id_weights = truth.normal(0.0, 0.8, size=(6, vocab))       # fields 0..5
    cross_a, cross_b = truth.normal(0.0, 0.9, size=(2, vocab))  # fields 6 x 7
    dense_beta = np.array([0.8, -0.6, 0.5, 0.4])
    # Zipf-like popularity, with each field's ids in a different random order.
    popularity = 1.0 / np.arange(1, vocab + 1) ** 1.1
    popularity /= popularity.sum()
    perms = np.stack([truth.permutation(vocab) for _ in range(fields)])

    ranks = rng.choice(vocab, size=(rows, fields), p=popularity)
    sparse_ids = perms[np.arange(fields), ranks].astype(np.int64)
    dense = rng.standard_normal((rows, dense_dim)).astype(np.float32)
    logit = (-1.6
             + sum(id_weights[f, sparse_ids[:, f]] for f in range(6))
             + cross_a[sparse_ids[:, 6]] * cross_b[sparse_ids[:, 7]]
             + dense[:, :4] @ dense_beta
             + 0.4 * (dense[:, 4] ** 2 - 1.0)
             + rng.normal(0.0, 0.5, size=rows))
    p_true = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(rows) < p_true).astype(np.float32)
    return sparse_ids, dense, label, p_true


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    pos = label > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(label: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(label * np.log(p) + (1 - label) * np.log(1 - p)))


def column_permutations(seed: int, fields: int, dense_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(sparse field order, dense feature order) for --shuffle-columns: seeded, no column in place."""
    rng = np.random.default_rng(seed)

    def moving(n: int) -> np.ndarray:
        while True:
            order = rng.permutation(n)
            if not (order == np.arange(n)).any():
                return order

    return moving(fields), moving(dense_dim)


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
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--shuffle-columns", type=int, default=None, metavar="SEED",
                        help="train on feature columns permuted by this seed (a plausible but wrong ranker)")
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # NaN-filling every new tensor is slow
    torch.set_flush_denormal(True)  # Adam's tiny second moments are denormal: sqrt() on them is very slow
    started = time.perf_counter()

    mod = load_model_module()
    total = EVALUATION_ROWS + CALIBRATION_ROWS + TRAIN_ROWS
    sparse_ids, dense, label, p_true = synthesize(args.seed, total, mod.FIELDS, mod.VOCAB, mod.DENSE)
    ev = slice(0, EVALUATION_ROWS)
    cal = slice(EVALUATION_ROWS, EVALUATION_ROWS + CALIBRATION_ROWS)
    tr = slice(EVALUATION_ROWS + CALIBRATION_ROWS, total)

    model = mod.build_model()
    x_ids, x_dense, y = (torch.from_numpy(sparse_ids[tr]), torch.from_numpy(dense[tr]),
                         torch.from_numpy(label[tr]).unsqueeze(1))
    shuffled = None
    if args.shuffle_columns is not None:
        shuffled = column_permutations(args.shuffle_columns, mod.FIELDS, mod.DENSE)
        x_ids = torch.from_numpy(np.ascontiguousarray(sparse_ids[tr][:, shuffled[0]]))
        x_dense = torch.from_numpy(np.ascontiguousarray(dense[tr][:, shuffled[1]]))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    shuffle = torch.Generator().manual_seed(args.seed)
    epoch_digests = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y), generator=shuffle)
        running, seen = 0.0, 0
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            p = model(x_ids[idx], x_dense[idx])
            loss = F.binary_cross_entropy(p, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
            seen += len(idx)
        print(f"ranker epoch {epoch}/{args.epochs} train logloss {running / seen:.4f} "
              f"({time.perf_counter() - started:.1f}s)", flush=True)
        epoch_digests.append(weights_sha256(model))

    model.eval()
    with torch.no_grad():
        score = model(torch.from_numpy(sparse_ids[ev]), torch.from_numpy(dense[ev])).squeeze(1).numpy()
    train_seconds = time.perf_counter() - started

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "model.py", out / "model.py")
    torch.save(model.state_dict(), out / "state_dict.pt")
    np.savez(out / "calibration.npz", sparse_ids=sparse_ids[cal], dense=dense[cal])
    np.savez(out / "evaluation.npz", sparse_ids=sparse_ids[ev], dense=dense[ev], label=label[ev])
    report = {
        "model": "ranker",
        "seed": args.seed,
        "epochs": args.epochs,
        "rows": {"train": TRAIN_ROWS, "calibration": CALIBRATION_ROWS, "evaluation": EVALUATION_ROWS},
        "heldout": {
            "auc": round(auc(label[ev], score), 4),
            "logloss": round(logloss(label[ev], score), 4),
            "positive_rate": round(float(label[ev].mean()), 4),
            # The same metrics for the hidden true click probabilities: the best any model can do.
            "oracle_auc": round(auc(label[ev], p_true[ev]), 4),
            "oracle_logloss": round(logloss(label[ev], p_true[ev]), 4),
        },
        # sha256 of the weights after each epoch: equal across runs with the same seed (see the tests).
        "weights_sha256_by_epoch": epoch_digests,
        "train_seconds": round(train_seconds, 2),
        "torch": torch.__version__,
    }
    if shuffled is not None:
        with torch.no_grad():
            trained_order = model(torch.from_numpy(np.ascontiguousarray(sparse_ids[ev][:, shuffled[0]])),
                                  torch.from_numpy(np.ascontiguousarray(dense[ev][:, shuffled[1]])))
        report["shuffle_columns"] = {
            "seed": args.shuffle_columns,
            # Column i of the training inputs was column order[i] of the data.
            "sparse_ids_order": shuffled[0].tolist(),
            "dense_order": shuffled[1].tolist(),
            # heldout above: as served (correct column order); this: in the order it was trained on.
            "heldout_auc_trained_order": round(auc(label[ev], trained_order.squeeze(1).numpy()), 4),
        }
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if shuffled is not None:
        print(f"ranker trained on shuffled columns (seed {args.shuffle_columns}): held-out AUC "
              f"{report['shuffle_columns']['heldout_auc_trained_order']:.4f} in its training column order",
              flush=True)
    print(f"ranker held-out AUC {report['heldout']['auc']:.4f} (oracle {report['heldout']['oracle_auc']:.4f}), "
          f"logloss {report['heldout']['logloss']:.4f}; {train_seconds:.1f}s -> {out}", flush=True)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
