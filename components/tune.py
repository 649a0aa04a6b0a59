"""Tuning steps: Optuna on train -> validation before each trainer; the chosen values
(``best_params.json``) feed the trainer. Trial 0 is the pipeline's own values; 0 trials passes
them through, so the DAG is the same with or without a search budget.

The hyperparameter defaults below are literals because KFP ships only the function's source to
the pod; ``tests/unit/test_config_defaults.py`` checks each against its trainer config dataclass.
"""

from kfp import dsl

from components.glossary import shared_args
from components.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def tune_als(snapshot: dsl.Input[dsl.Dataset], use_case: str, best: dsl.Output[dsl.Artifact],
             report: dsl.Output[dsl.Markdown], factors: int = 128, regularization: float = 0.01,
             alpha: float = 1.0, iterations: int = 10, weighting: str = "linear", trials: int = 0,
             timeout_s: float = 0.0, seed: int = 0, split_at: str = "", test_days: float = 14.0,
             val_days: float = 14.0):
    """ALS: factors, regularization, alpha, iterations, confidence weighting.

    Args:
        snapshot: (shared)
        use_case: The use case to tune for.
        factors: Latent factors of trial 0 (the baseline the search must beat).
        regularization: L2 regularization of trial 0.
        alpha: Confidence scale of trial 0 (confidence = 1 + alpha * f(weight)).
        iterations: ALS sweeps of trial 0.
        weighting: Confidence weighting of trial 0: ``linear``, ``binary``, ``log`` or ``bm25``.
        (shared) trials timeout_s seed=tune_seed split_at test_days val_days=tune_val_days

    Returns:
        best: ``best_params.json`` (chosen and default values, their validation NDCG@10, every
            trial) and ``trials.csv``; the ALS trainers read their values from it.
        report: (shared tune_report)
    """
    from startup_recs.pipeline import tune_steps

    best.metadata.update(tune_steps.tune(
        snapshot.path, use_case, "als", best.path, trials=trials, timeout_s=timeout_s, seed=seed,
        defaults={"factors": factors, "regularization": regularization, "alpha": alpha, "iterations": iterations,
                  "weighting": weighting}, split_at=split_at, test_days=test_days, val_days=val_days,
        report_md=report.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def tune_item2item(snapshot: dsl.Input[dsl.Dataset], use_case: str, best: dsl.Output[dsl.Artifact],
                   report: dsl.Output[dsl.Markdown], method: str = "ease", lam: float = 200.0,
                   neighbours: int = 100, trials: int = 0, timeout_s: float = 0.0, seed: int = 0,
                   split_at: str = "", test_days: float = 14.0, val_days: float = 14.0):
    """Item-to-item: EASE's lambda or the item-kNN neighbourhood size.

    Args:
        snapshot: (shared)
        use_case: The use case to tune for.
        method: Method of trial 0: ``ease`` (EASE where its solve fits in memory, BM25 item-kNN
            past that; the trainer's ``auto``), ``cosine`` or ``bm25``.
        lam: EASE L2 strength of trial 0.
        neighbours: Item-kNN neighbours (K) of trial 0.
        (shared) trials timeout_s seed=tune_seed split_at test_days val_days=tune_val_days

    Returns:
        best: ``best_params.json`` and ``trials.csv``; the item-to-item trainers read their values
            from it.
        report: (shared tune_report)
    """
    from startup_recs.pipeline import tune_steps

    best.metadata.update(tune_steps.tune(
        snapshot.path, use_case, "item2item", best.path, trials=trials, timeout_s=timeout_s, seed=seed,
        defaults={"method": method, "lam": lam, "neighbours": neighbours}, split_at=split_at,
        test_days=test_days, val_days=val_days, report_md=report.path))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
@shared_args
def tune_two_tower(snapshot: dsl.Input[dsl.Dataset], use_case: str, best: dsl.Output[dsl.Artifact],
                   report: dsl.Output[dsl.Markdown], embedding_dim: int = 128, lr: float = 0.001,
                   temperature: float = 0.2, hard_negatives: int = 2, trials: int = 0, timeout_s: float = 0.0,
                   seed: int = 0, split_at: str = "", test_days: float = 14.0, val_days: float = 14.0):
    """Two-tower: embedding dim, learning rate, softmax temperature, hard negatives (early stopping).

    Args:
        snapshot: (shared)
        use_case: The use case to tune for.
        embedding_dim: Output embedding size of trial 0.
        lr: Adam learning rate of trial 0.
        temperature: Softmax temperature of trial 0 (logits = cosine / temperature).
        hard_negatives: Hard negatives per positive of trial 0.
        (shared) trials timeout_s seed=tune_seed split_at test_days val_days=tune_val_days

    Returns:
        best: ``best_params.json`` and ``trials.csv``; the two-tower trainers read their values
            from it.
        report: (shared tune_report)
    """
    from startup_recs.pipeline import tune_steps

    best.metadata.update(tune_steps.tune(
        snapshot.path, use_case, "two-tower", best.path, trials=trials, timeout_s=timeout_s, seed=seed,
        defaults={"embedding_dim": embedding_dim, "lr": lr, "temperature": temperature,
                  "hard_negatives": hard_negatives}, split_at=split_at, test_days=test_days,
        val_days=val_days, report_md=report.path))
