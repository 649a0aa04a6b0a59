"""Worker for test_two_tower_ddp: one torchrun rank trains, then saves the weights it ends with."""

import sys

import torch

from startup_recs.train.two_tower import TwoTowerConfig, fit

if __name__ == "__main__":
    torch.set_num_threads(1)
    data, out = sys.argv[1], sys.argv[2]
    cfg = TwoTowerConfig(epochs=3, batch_size=32, embedding_dim=16, hidden_dim=32, feature_dim=8, lr=3e-3,
                         fit_on="trainval", device="cpu", progress=False)
    model, _ = fit(cfg, data, out)
    rank = torch.distributed.get_rank()
    torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()
