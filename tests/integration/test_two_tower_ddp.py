"""The two-tower trainer data-parallel under torchrun: 2 gloo ranks on CPU end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tests.unit.two_tower_data import make_dataset

STEM = "two_tower_reverse_v1"


def test_torchrun_two_gloo_ranks_agree(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", n_startups=24, n_devs=60, pos_per_startup=8)
    out = tmp_path / "m"
    out.mkdir()
    worker = Path(__file__).with_name("two_tower_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(worker), str(data), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # only rank 0 wrote the artifacts, and they describe a 2-process run over every candidate
    config = json.loads((out / f"{STEM}_config.json").read_text())
    assert config["world_size"] == 2 and config["epochs_run"] == 3
    hist = json.loads((out / f"{STEM}_history.json").read_text())
    assert len(hist) == 3 and hist[-1]["loss"] < hist[0]["loss"]
    emb = np.load(out / f"{STEM}_candidate_embeddings.npy", allow_pickle=False)
    assert emb.shape == (60, 16)
    # the latest checkpoint (rank 0) holds the same final weights
    init = torch.load(out / f"{STEM}_latest.pth", weights_only=True)["model"]
    assert torch.equal(init["entity_tower.id_emb.weight"], a["entity_tower.id_emb.weight"])
