"""Two-tower training throughput: our trainer vs a bare PyTorch loop of the same model, same run.

    python benchmarks/bench_two_tower.py                       # CPU, demo-like sizes
    python benchmarks/bench_two_tower.py --device cuda --batch-size 8192 --dim 128 [--compile]

Both sides train the same :class:`TwoTowerModel` on the same encoded tensors (a synthetic dataset
in the ``recs dataset two-tower`` format, written to a temp dir and loaded by the trainer's own
loader). The bare loop is what one would write by hand: shuffled index batches, both towers,
in-batch softmax cross-entropy, AdamW; no log-Q, no hard negatives, no progress bar, no
checkpoints. "ours (same work)" runs the trainer with ``--hard-negatives 0`` so both do the same
arithmetic; "ours (default)" adds 2 hard negatives per positive (more candidate-tower work).
samples/s = positives per second over the steady epochs (the first epoch is warm-up); samples per
CPU-second (process time) is the fairer figure on a shared machine; the "whole run" column
divides by everything (data loading, checkpoints, embedding export included). On CPU use
``--threads 1`` when other work shares the cores: OpenMP threads spin-waiting for a descheduled
sibling burn CPU time and halve throughput.
Target: ours (same work) >= 0.8x bare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from startup_recs.models.two_tower import TwoTowerModel, token_pairs
from startup_recs.train.two_tower import TwoTowerConfig, fit
from startup_recs.train.two_tower_data import load_dataset


def make_data(out: Path, n_entities: int, n_candidates: int, n_pos: int, seed: int = 0) -> Path:
    """A synthetic two-tower dataset (clusters shared by features and behaviour) on disk."""
    rng = np.random.default_rng(seed)
    k = 20
    ec, cc = rng.integers(0, k, n_entities), rng.integers(0, k, n_candidates)
    ent = rng.integers(0, n_entities, n_pos)
    same = rng.random(n_pos) < 0.8
    by_cluster = [np.flatnonzero(cc == c) for c in range(k)]
    cand = rng.integers(0, n_candidates, n_pos)
    for c in range(k):
        m = same & (ec[ent] == c)
        cand[m] = rng.choice(by_cluster[c], int(m.sum()))
    n_hard = n_pos // 2
    pairs = pd.DataFrame({
        "entity_id": np.concatenate([ent, rng.integers(0, n_entities, n_hard)]).astype(str),
        "candidate_id": np.concatenate([cand, rng.integers(0, n_candidates, n_hard)]).astype(str),
        "label": np.r_[np.ones(n_pos, np.int8), np.zeros(n_hard, np.int8)],
        "weight": np.r_[rng.integers(1, 6, n_pos), np.ones(n_hard)].astype(np.float32),
        "neg_type": np.r_[np.full(n_pos, "pos"), np.full(n_hard, "hard")],
    }).drop_duplicates(["entity_id", "candidate_id"])
    pairs["ts"] = pd.Timestamp("2026-01-01", tz="UTC")
    pairs["split"] = rng.choice(["train", "val", "test"], len(pairs), p=[0.8, 0.1, 0.1])
    path = out / "bench.parquet"
    pairs.to_parquet(path, index=False)
    tokens = np.array([f"skill{i}" for i in range(200)])

    def skills(clusters: np.ndarray) -> list[list[str]]:
        return [list(tokens[(c * 10 + rng.integers(0, 10, 3)) % 200]) for c in clusters]

    pd.DataFrame({
        "entity_id": np.arange(n_entities).astype(str), "sector": [f"sector{c}" for c in ec],
        "stage": rng.choice(["pre", "seed", "a", "b", "c"], n_entities),
        "location": rng.choice([f"city{i}" for i in range(30)], n_entities),
        "skills_needed": skills(ec), "funding_usd": rng.lognormal(14, 1.5, n_entities),
    }).to_parquet(out / "bench_entities.parquet", index=False)
    pd.DataFrame({
        "candidate_id": np.arange(n_candidates).astype(str),
        "location": rng.choice([f"city{i}" for i in range(30)], n_candidates),
        "skills": skills(cc), "experience_years": rng.uniform(0, 20, n_candidates),
    }).to_parquet(out / "bench_candidates.parquet", index=False)
    (out / "bench_meta.json").write_text(json.dumps({"use_case": "startup_developer"}))
    return path


def bare_loop(data_uri: str, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """Steady-state (samples/s, samples per CPU-second) of a hand-written loop, same model and tensors."""
    data = load_dataset(data_uri, "trainval")
    torch.manual_seed(0)
    model = TwoTowerModel(data.entity_spec, data.candidate_spec, args.dim, 256, 32,
                          pairs=token_pairs(data.encoder, data.use_case)).to(device)  # as the trainer builds it
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=True)  # as the trainer
    e_rows, c_rows, _ = data.positives(("train", "val"))
    e_rows, c_rows = e_rows.to(device), c_rows.to(device)
    ents, cands = data.entities.to(device), data.candidates.to(device)

    def step(e_idx: torch.Tensor, c_idx: torch.Tensor) -> torch.Tensor:
        e = model.entity_tower(ents.take(e_idx))
        c = model.candidate_tower(cands.take(c_idx))
        logits = (e @ c.T).float() / 0.2
        return F.cross_entropy(logits, torch.arange(len(e_idx), device=device))

    step_fn = torch.compile(step) if args.compile else step
    rates, cpu_rates = [], []
    for _epoch in range(args.epochs):
        perm = torch.randperm(len(e_rows), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0, n = time.perf_counter(), time.process_time(), 0
        for s in range(0, len(perm), args.batch_size):
            idx = perm[s:s + args.batch_size]
            if len(idx) < 2:
                break
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = step_fn(e_rows[idx], c_rows[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / (time.process_time() - c0))
    return statistics.median(rates[1:] or rates), statistics.median(cpu_rates[1:] or cpu_rates)


def ours(data_uri: str, args: argparse.Namespace, out: str, hard: int) -> tuple[float, float, float]:
    cfg = TwoTowerConfig(epochs=args.epochs, batch_size=args.batch_size, embedding_dim=args.dim, lr=1e-3,
                         hard_negatives=hard, fit_on="trainval", device=args.device, compile=args.compile,
                         progress=False)
    t0 = time.perf_counter()
    _, config = fit(cfg, data_uri, out)
    wall = time.perf_counter() - t0
    hist = json.loads((Path(out) / config["files"]["history"]).read_text())
    rates = [h["samples_per_s"] for h in hist]
    cpu_rates = [h["samples_per_s"] * h["seconds"] / h["cpu_seconds"] for h in hist]
    n = sum(h["samples_per_s"] * h["seconds"] for h in hist)
    return statistics.median(rates[1:] or rates), statistics.median(cpu_rates[1:] or cpu_rates), n / wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--entities", type=int, default=5_000)
    p.add_argument("--candidates", type=int, default=40_000)
    p.add_argument("--positives", type=int, default=150_000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available on this machine", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data_uri = str(make_data(Path(tmp), args.entities, args.candidates, args.positives))
        n_pos = int((pd.read_parquet(data_uri, columns=["label", "split"]).query("label > 0 and split != 'test'")).shape[0])
        bare, bare_cpu = bare_loop(data_uri, args, device)
        same, same_cpu, same_wall = ours(data_uri, args, str(Path(tmp) / "m0"), hard=0)
        full, full_cpu, full_wall = ours(data_uri, args, str(Path(tmp) / "m2"), hard=2)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"two-tower training throughput: {name}, batch {args.batch_size}, dim {args.dim}, "
          f"{n_pos:,} positives/epoch, {args.epochs} epochs, compile={args.compile}")
    print("| loop | samples/s (steady) | vs bare | samples per CPU-s | vs bare | samples/s (whole run) |")
    print("|---|---|---|---|---|---|")
    print(f"| bare PyTorch loop | {bare:,.0f} | 1.00x | {bare_cpu:,.0f} | 1.00x | - |")
    for name, r, c, w in (("ours (same work, --hard-negatives 0)", same, same_cpu, same_wall),
                          ("ours (default, --hard-negatives 2)", full, full_cpu, full_wall)):
        print(f"| {name} | {r:,.0f} | {r / bare:.2f}x | {c:,.0f} | {c / bare_cpu:.2f}x | {w:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
