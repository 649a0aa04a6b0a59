"""Two-tower trainer (``recs train two-tower``; legacy ``train_two_tower.py`` flags).

One process or many: under ``torchrun`` the same loop runs data-parallel (DDP; NCCL on GPUs,
gloo on CPU), each rank drawing its shard of the positives from a ``DistributedSampler``;
only rank 0 validates and writes. ``--batch-size`` is per process.

Fit windows (docs/contracts.md): ``--fit-on train`` trains on the train split and stops early on
validation Recall@K (``--patience``); ``--fit-on trainval`` (the evaluated final model) and ``all``
(the published refit on every event up to the watermark) train for exactly ``--epochs``: the
stage-1 run's ``best_epoch`` scaled to the larger window by :func:`refit_epochs`.

Artifacts in ``--output-dir`` (``{sfx}`` = ``_reverse`` for reverse use cases):
``two_tower{sfx}_v1_best.pth`` (state_dict), ``_latest.pth`` (model + optimizer + epoch +
early-stopping state, for ``--resume``), ``_encoder.json``, ``_candidate_embeddings.npy`` +
``_candidate_ids.json`` (every candidate of the dataset), ``_entity_embeddings.npy`` +
``_entity_ids.json``, ``_history.json`` (per-epoch loss, samples/s, validation metrics) and
``_config.json``, written last.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import torch
from tqdm import tqdm

from startup_recs import __version__
from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ConfigError, DataError, ModelFitError, ModelMismatchError
from startup_recs.models.two_tower import (
    SideTensors,
    TwoTowerModel,
    dumps_encoder,
    embed_all,
    load_encoder,
    save_embeddings,
    token_pairs,
)
from startup_recs.train.two_tower_data import FIT_SPLITS, TwoTowerData, load_dataset
from startup_recs.train.two_tower_dist import Dist, all_mean, broadcast, init_distributed, resolve_device
from startup_recs.train.two_tower_eval import evaluate_saved, format_table, validate
from startup_recs.train.two_tower_loss import RetrievalTask

log = logging.getLogger(__name__)


@dataclass
class TwoTowerConfig:
    """Every hyperparameter of a run (saved under ``hyperparameters`` in the config JSON)."""

    use_case: str | None = None
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    embedding_dim: int = 128
    hidden_dim: int = 256
    feature_dim: int = 32
    temperature: float = 0.2  # cosine / T: logits in [-5, 5]; 0.05 underfits id-only data
    log_q: bool = True
    hard_negatives: int = 2  # per positive, sampled from the entity's shown-not-acted candidates
    id_dropout: float = 0.1  # trains the feature-only path used for unknown ids
    # one token table per pair of fields the match terms compare (skills needed / skills, ...),
    # tied between the towers (models.two_tower.TokenPair); pair_init: a token row's norm at init
    shared_tokens: bool = True
    pair_init: float = 0.3
    patience: int = 5
    val_k: int = 20  # early stopping on validation Recall@val_k
    fit_on: str = "train"  # "train" | "trainval" | "all"
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    progress: bool = True

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "embedding_dim", "hidden_dim", "feature_dim", "patience", "val_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("--batch-size must be >= 2 (in-batch negatives)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if not (self.pair_init > 0 and math.isfinite(self.pair_init)):
            raise ConfigError(f"--pair-init must be a positive number, got {self.pair_init}")
        if self.hard_negatives < 0 or not 0 <= self.id_dropout < 1:
            raise ConfigError("--hard-negatives must be >= 0 and id dropout in [0, 1)")
        if self.fit_on not in FIT_SPLITS:
            raise ConfigError(f"--fit-on must be one of {', '.join(FIT_SPLITS)}, got {self.fit_on!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")


# ------------------------------------------------------------------------------- the loop
class Batches:
    """Shuffled batches of the fit-window positives (+ sampled hard negatives) on ``device``."""

    def __init__(self, data: TwoTowerData, cfg: TwoTowerConfig, device: torch.device, d: Dist) -> None:
        splits = FIT_SPLITS[cfg.fit_on]
        e, c, w = data.positives(splits)
        self.ent_rows, self.cand_rows, self.weights = e.to(device), c.to(device), w.to(device)
        offsets, rows = data.hard_negatives(splits)
        self.k = cfg.hard_negatives if len(rows) else 0
        self.offsets, self.hard_rows = offsets.to(device), rows.to(device)
        self.entities, self.candidates = data.entities.to(device), data.candidates.to(device)
        self.n, self.batch_size, self.seed, self.d, self.device = len(e), cfg.batch_size, cfg.seed, d, device
        self.sampler = None
        if d.world > 1:
            from torch.utils.data import DistributedSampler

            self.sampler = DistributedSampler(range(self.n), num_replicas=d.world, rank=d.rank,
                                              shuffle=True, seed=cfg.seed)

    def order(self, epoch: int) -> torch.Tensor:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            return torch.tensor(list(iter(self.sampler)), dtype=torch.int64, device=self.device)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g).to(self.device)

    def __len__(self) -> int:
        per_rank = math.ceil(self.n / self.d.world)
        return max(1, per_rank // self.batch_size + (per_rank % self.batch_size >= 2))

    def hard(self, e_rows: torch.Tensor, c_rows: torch.Tensor) -> tuple[SideTensors | None, torch.Tensor | None]:
        """k hard negatives per row, drawn uniformly from the entity's list (invalid when none)."""
        if not self.k:
            return None, None
        start = self.offsets[e_rows]
        count = self.offsets[e_rows + 1] - start
        pick = (torch.rand((len(e_rows), self.k), device=self.device) * count[:, None]).long()
        idx = (start[:, None] + pick).clamp_max(len(self.hard_rows) - 1)
        rows = self.hard_rows[idx]
        valid = (count[:, None] > 0) & (rows != c_rows[:, None])
        return self.candidates.take(rows.reshape(-1)), valid

    def epoch(self, epoch: int):  # -> Iterator[tuple[...]]
        order = self.order(epoch)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            if len(idx) < 2:
                break
            e_rows, c_rows = self.ent_rows[idx], self.cand_rows[idx]
            hard, valid = self.hard(e_rows, c_rows)
            yield (self.entities.take(e_rows), self.candidates.take(c_rows), c_rows, self.weights[idx], hard, valid)


def _save_torch(obj: Any, uri: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    storage.write_bytes(uri, buf.getvalue())


def _config_json(cfg: TwoTowerConfig, model: TwoTowerModel, data: TwoTowerData, names: artifacts.TwoTowerFiles,
                 data_uri: str, state: dict[str, Any], d: Dist) -> dict[str, Any]:
    return {
        "name": names.stem, "kind": "two_tower", "use_case": data.use_case,
        "version": 1, "package_version": __version__, "trained_at": datetime.now(UTC).isoformat(),
        "hyperparameters": asdict(cfg),
        "model": {"dim": model.dim, "hidden": cfg.hidden_dim, "feature_dim": cfg.feature_dim,
                  "entity": model.entity_tower.spec.to_json(), "candidate": model.candidate_tower.spec.to_json(),
                  "pairs": [p.to_json() for p in model.pairs]},
        "feature_spec": {"entity": model.entity_tower.spec.feature_signature(),
                         "candidate": model.candidate_tower.spec.feature_signature()},
        "files": names.as_dict(),
        "data": {"uri": str(data_uri), "fit_on": cfg.fit_on, "fit_until": _fit_until(data.meta, cfg.fit_on),
                 "meta": data.meta},
        "n_positives": int(data.positives(FIT_SPLITS[cfg.fit_on])[0].numel()),
        "best_epoch": state["best_epoch"], "best_val": state["best_val"] if cfg.fit_on == "train" else None, "epochs_run": state["epoch"],
        "stopped_early": state["stopped_early"], "world_size": d.world,
        "n_entities": len(data.entity_ids), "n_candidates": len(data.candidate_ids),
    }


def _fit_until(meta: dict[str, Any], fit_on: str) -> str | None:
    """Exclusive end of the fit window (ISO) from the dataset's recorded split; ``None`` for
    ``all`` (every event) or a dataset that records no split."""
    split = (meta or {}).get("split") or {}
    return {"train": split.get("val_start"), "trainval": split.get("split_at")}.get(fit_on)


def make_optimizer(task: torch.nn.Module, cfg: TwoTowerConfig) -> torch.optim.Optimizer:
    """AdamW; the fused kernel (one pass over each tensor) where this build has it."""
    try:
        return torch.optim.AdamW(task.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(task.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _check_resume(saved: dict[str, Any], cfg: TwoTowerConfig, use_case: str) -> None:
    if saved.get("use_case") != use_case:
        raise ModelMismatchError(f"--resume: the saved model is for {saved.get('use_case')!r}, the data for {use_case!r}")
    hp = saved.get("hyperparameters", {})
    for key in ("embedding_dim", "hidden_dim", "feature_dim", "fit_on", "shared_tokens"):
        if key in hp and hp[key] != getattr(cfg, key):
            raise ModelMismatchError(f"--resume: {key} was {hp[key]!r}, now {getattr(cfg, key)!r}")


def train(cfg: TwoTowerConfig, data_uri: str, output_dir: str, resume: bool = False) -> dict[str, Any]:
    """Train, validate, and write every artifact. Returns the saved config (``{}`` on ranks > 0)."""
    return fit(cfg, data_uri, output_dir, resume)[1]


def fit(cfg: TwoTowerConfig, data_uri: str, output_dir: str, resume: bool = False
        ) -> tuple[TwoTowerModel, dict[str, Any]]:
    """:func:`train`, also returning the model (rank 0: the best weights; other ranks: the last)."""
    cfg.validate()
    device = resolve_device(cfg.device)
    d = init_distributed(device)
    torch.manual_seed(cfg.seed)
    encoder, saved, latest = None, None, None
    if resume:
        uc_name = cfg.use_case or _peek_use_case(data_uri)
        names = artifacts.two_tower_files(uc_name)
        if not storage.exists(storage.join(output_dir, names.latest)):
            raise ConfigError(f"--resume: no {names.latest} in {output_dir}")
        saved = storage.read_json(storage.join(output_dir, names.config))
        _check_resume(saved, cfg, uc_name)
        encoder = load_encoder(storage.read_json(storage.join(output_dir, names.encoder)))
        latest = torch.load(io.BytesIO(storage.read_bytes(storage.join(output_dir, names.latest))),
                            map_location="cpu", weights_only=True)
    data = load_dataset(data_uri, cfg.fit_on, encoder=encoder, use_case=cfg.use_case)
    if cfg.use_case and cfg.use_case != data.use_case:
        raise ModelMismatchError(f"--use-case {cfg.use_case} but the dataset {data_uri} is for {data.use_case}")
    cfg.use_case = data.use_case
    names = artifacts.two_tower_files(data.use_case)
    splits = FIT_SPLITS[cfg.fit_on]
    do_val = cfg.fit_on == "train"
    if do_val and not ((data.pairs["split"] == "val") & (data.pairs["label"] > 0)).any():
        raise DataError(f"{data_uri}: the validation split is empty (no positives); use --fit-on trainval with fixed --epochs")

    pairs = token_pairs(data.encoder, data.use_case) if cfg.shared_tokens else ()
    model = TwoTowerModel(data.entity_spec, data.candidate_spec, cfg.embedding_dim, cfg.hidden_dim, cfg.feature_dim,
                          pairs=pairs, pair_init=cfg.pair_init)
    task = RetrievalTask(model, cfg.temperature, data.log_q(splits) if cfg.log_q else None, cfg.id_dropout).to(device)
    optimizer = make_optimizer(task, cfg)
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_val": -1.0, "bad_epochs": 0, "stopped_early": False}
    history: list[dict[str, Any]] = []
    if latest is not None:
        model.load_weights_state(latest["model"])
        optimizer.load_state_dict(latest["optimizer"])
        state.update({k: latest[k] for k in state if k in latest})
        history = json.loads(latest.get("history", "[]"))
        log.info("resumed from epoch %d (best epoch %d)", state["epoch"], state["best_epoch"])

    step_fn: Any = task
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_fn = DDP(task, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        step_fn = torch.compile(step_fn)
    batches = Batches(data, cfg, device, d)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _Null()
    if d.main:
        log.info("two-tower %s: %d positives (%s), %d entities, %d candidates, %d hard negatives, shared tokens %s, "
                 "device %s x%d", data.use_case, batches.n, "+".join(splits), len(data.entity_ids),
                 len(data.candidate_ids), len(batches.hard_rows),
                 ", ".join(f"{p.entity}/{p.candidate}" for p in pairs) or "none", device, d.world)

    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if state["stopped_early"]:
            break
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + d.rank)  # id dropout, hard negatives
        task.train()
        total, n_seen, t0, c0 = torch.zeros((), device=device), 0, time.perf_counter(), time.process_time()
        bar = tqdm(total=len(batches), desc=f"epoch {epoch}/{cfg.epochs}", disable=not (d.main and cfg.progress),
                   leave=False, mininterval=1.0, unit="batch")
        for i, (ent, cand, c_rows, w, hard, valid) in enumerate(batches.epoch(epoch)):
            with autocast:
                loss = step_fn(ent, cand, c_rows, w, hard, valid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            n_seen += len(c_rows)
            bar.update(1)
            if i % 25 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{n_seen / (time.perf_counter() - t0):,.0f}")
        bar.close()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        epoch_loss = all_mean(total / max(len(batches), 1), d)
        if not math.isfinite(epoch_loss):
            raise ModelFitError(f"two-tower loss became {epoch_loss} at epoch {epoch}; lower --lr or check the weights")
        row: dict[str, Any] = {"epoch": epoch, "loss": epoch_loss, "seconds": seconds, "cpu_seconds": cpu_seconds,
                               "samples_per_s": n_seen * d.world / max(seconds, 1e-9)}
        if do_val:
            metrics = validate(model, data, device, "val", (cfg.val_k,)) if d.main else {f"recall@{cfg.val_k}": 0.0}
            val = broadcast(metrics[f"recall@{cfg.val_k}"], d, device)
            row.update({k: v for k, v in metrics.items() if k != "users"})
            improved = val > state["best_val"] + 1e-6
        else:
            val, improved = float("nan"), True
        state["epoch"] = epoch
        if improved:
            state.update(best_epoch=epoch, best_val=val if do_val else -1.0, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
            state["stopped_early"] = state["bad_epochs"] >= cfg.patience
        history.append(row)
        if d.main:
            log.info("epoch %d: loss %.4f, %.0f samples/s%s%s", epoch, epoch_loss, row["samples_per_s"],
                     f", val recall@{cfg.val_k} {val:.4f}" if do_val else "", " (best)" if improved else "")
            if improved:
                _save_torch(model.state_dict(), storage.join(output_dir, names.best))
            _save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(), **state,
                         "history": json.dumps(history)}, storage.join(output_dir, names.latest))
    if d.main:
        best = torch.load(io.BytesIO(storage.read_bytes(storage.join(output_dir, names.best))),
                          map_location="cpu", weights_only=True)
        model.load_weights_state(best)
        model.to(device)
        _export(model, data, cfg, device, output_dir, names, history)
        config = _config_json(cfg, model, data, names, data_uri, state, d)
        storage.write_json(storage.join(output_dir, names.config), config)
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return model, (config if d.main else {})


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _export(model: TwoTowerModel, data: TwoTowerData, cfg: TwoTowerConfig, device: torch.device, output_dir: str,
            names: artifacts.TwoTowerFiles, history: list[dict[str, Any]]) -> None:
    """Embeddings of EVERY entity and candidate of the sidecars, the encoder and the history."""
    storage.write_bytes(storage.join(output_dir, names.encoder), dumps_encoder(data.encoder).encode())
    save_embeddings(output_dir, data.use_case, "candidate", embed_all(model, "candidate", data.candidates, device=device),
                    data.candidate_ids.tolist())
    save_embeddings(output_dir, data.use_case, "entity", embed_all(model, "entity", data.entities, device=device),
                    data.entity_ids.tolist())
    storage.write_json(storage.join(output_dir, names.history), history)


def _peek_use_case(data_uri: str) -> str:
    meta_uri = artifacts.sidecar(data_uri, artifacts.META_SIDECAR)
    uc = storage.read_json(meta_uri).get("use_case") if storage.exists(meta_uri) else None
    if not uc:
        raise ConfigError(f"--resume: cannot tell the use case of {data_uri}; pass --use-case")
    return uc


def best_epoch_of(models_dir: str, use_case: str) -> int:
    """The stage-1 run's best epoch (its config's ``best_epoch``): the ``--epochs`` of the final
    ``--fit-on trainval`` refit, so the final model trains as long as validation said was best."""
    uri = storage.join(models_dir, artifacts.two_tower_files(use_case).config)
    if not storage.exists(uri):
        raise ConfigError(f"no two-tower config for {use_case} in {models_dir}")
    epoch = int(storage.read_json(uri).get("best_epoch") or 0)
    if epoch < 1:
        raise DataError(f"{uri} records no best epoch")
    return epoch


def refit_epochs(best_epoch: int, stage1_positives: int, refit_positives: int, max_epochs: int | None = None) -> int:
    """Epochs of a refit on a larger window (``trainval``, ``all``) from the stage-1 best epoch.

    Early stopping measured how many *optimizer steps* at this learning rate (no schedule) the
    model takes before validation stops improving: ``best_epoch x stage1_positives / batch``. A
    window with ``r = refit_positives / stage1_positives`` times the positives has ``r`` times the
    steps per epoch, so the refit keeps that step budget: ``round(best_epoch / r)`` epochs, at
    least 1 (every new pair is seen at least once), at most ``max_epochs``. Keeping the epoch
    count instead would give ``r`` times the steps the validation curve ever saw; with the usual
    windows (a year of train, two weeks each of validation and test) ``r`` is 1.04-1.1 and the two
    agree after rounding, so the choice only matters for short histories, where the budget the
    validation measured is the safer one.
    """
    if best_epoch < 1:
        raise DataError(f"the stage-1 best epoch must be >= 1, got {best_epoch}")
    epochs = best_epoch
    if stage1_positives > 0 and refit_positives > 0:
        epochs = max(1, round(best_epoch * stage1_positives / refit_positives))
    return min(epochs, max_epochs) if max_epochs else epochs


def stage1_positives(models_dir: str, use_case: str) -> int:
    """The positives the stage-1 run trained on (its config's ``n_positives``; 0 when unrecorded)."""
    uri = storage.join(models_dir, artifacts.two_tower_files(use_case).config)
    return int(storage.read_json(uri).get("n_positives") or 0) if storage.exists(uri) else 0


def fit_positives(data_uri: str, fit_on: str) -> int:
    """Positive pairs of a two-tower dataset inside fit window ``fit_on`` (one column read)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = storage.read_table(data_uri, columns=["label", "split"])
    inside = pc.is_in(table["split"].cast(pa.string()), value_set=pa.array(list(FIT_SPLITS[fit_on])))
    return int(pc.sum(pc.and_(inside, pc.greater(table["label"], 0))).as_py() or 0)


# ------------------------------------------------------------------------------- CLI
def config_from_args(args: argparse.Namespace) -> TwoTowerConfig:
    kw = {f.name: getattr(args, f.name) for f in fields(TwoTowerConfig) if getattr(args, f.name, None) is not None}
    if getattr(args, "no_progress", False):
        kw["progress"] = False
    return TwoTowerConfig(**kw)


def cli_train(args: argparse.Namespace) -> int:
    if args.evaluate:
        if not (args.model and args.config):
            raise ConfigError("--evaluate needs --model and --config")
        result = evaluate_saved(args.model, args.config, args.data, device=args.device)
        print(format_table(result))
        return 0
    try:
        config = train(config_from_args(args), args.data, args.output_dir, resume=args.resume)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if config:
        print(json.dumps({"model": config["name"], "use_case": config["use_case"], "best_epoch": config["best_epoch"],
                          f"val_recall@{config['hyperparameters']['val_k']}": config["best_val"],
                          "epochs_run": config["epochs_run"], "output_dir": args.output_dir}))
    return 0
