"""Tuning steps (issue 7): Optuna on train -> validation before each trainer; the chosen values
(``best_params.json``) feed the trainer. Trial 0 is the pipeline's own values; 0 trials passes
them through, so the DAG is the same with or without a search budget."""

from kfp import dsl

from components.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def tune_als(snapshot: dsl.Input[dsl.Dataset], use_case: str, best: dsl.Output[dsl.Artifact],
             report: dsl.Output[dsl.Markdown], factors: int = 128, regularization: float = 0.01,
             alpha: float = 1.0, iterations: int = 10, weighting: str = "linear", trials: int = 0,
             timeout_s: float = 0.0, seed: int = 0, split_at: str = "", test_days: float = 14.0,
             val_days: float = 14.0):
    """ALS: factors, regularization, alpha, iterations, confidence weighting."""
    from startup_recs.pipeline import steps

    best.metadata.update(steps.tune(
        snapshot.path, use_case, "als", best.path, trials=trials, timeout_s=timeout_s, seed=seed,
        defaults={"factors": factors, "regularization": regularization, "alpha": alpha, "iterations": iterations,
                  "weighting": weighting}, split_at=split_at, test_days=test_days, val_days=val_days,
        report_md=report.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def tune_item2item(snapshot: dsl.Input[dsl.Dataset], use_case: str, best: dsl.Output[dsl.Artifact],
                   report: dsl.Output[dsl.Markdown], method: str = "ease", lam: float = 200.0,
                   neighbours: int = 100, trials: int = 0, timeout_s: float = 0.0, seed: int = 0,
                   split_at: str = "", test_days: float = 14.0, val_days: float = 14.0):
    """Item-to-item: EASE's lambda or the item-kNN neighbourhood size."""
    from startup_recs.pipeline import steps

    best.metadata.update(steps.tune(
        snapshot.path, use_case, "item2item", best.path, trials=trials, timeout_s=timeout_s, seed=seed,
        defaults={"method": method, "lam": lam, "neighbours": neighbours}, split_at=split_at,
        test_days=test_days, val_days=val_days, report_md=report.path))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def tune_two_tower(snapshot: dsl.Input[dsl.Dataset], use_case: str, best: dsl.Output[dsl.Artifact],
                   report: dsl.Output[dsl.Markdown], embedding_dim: int = 128, lr: float = 0.001,
                   temperature: float = 0.2, hard_negatives: int = 2, trials: int = 0, timeout_s: float = 0.0,
                   seed: int = 0, split_at: str = "", test_days: float = 14.0, val_days: float = 14.0):
    """Two-tower: embedding dim, learning rate, softmax temperature, hard negatives (early stopping)."""
    from startup_recs.pipeline import steps

    best.metadata.update(steps.tune(
        snapshot.path, use_case, "two-tower", best.path, trials=trials, timeout_s=timeout_s, seed=seed,
        defaults={"embedding_dim": embedding_dim, "lr": lr, "temperature": temperature,
                  "hard_negatives": hard_negatives}, split_at=split_at, test_days=test_days,
        val_days=val_days, report_md=report.path))
