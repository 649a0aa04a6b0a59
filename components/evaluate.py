"""Evaluate: final retrievers + ranker on the test window; warm route chosen on validation."""

from kfp import dsl

from components.glossary import shared_args
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def evaluate(snapshot: dsl.Input[dsl.Dataset], two_tower: dsl.Input[dsl.Model], als: dsl.Input[dsl.Model],
             item2item: dsl.Input[dsl.Model], stage1: dsl.Input[dsl.Model],
             tuned_two_tower: dsl.Input[dsl.Artifact], tuned_als: dsl.Input[dsl.Artifact],
             tuned_item2item: dsl.Input[dsl.Artifact], use_case: str, models: dsl.Output[dsl.Model],
             evaluation: dsl.Output[dsl.Artifact], metrics: dsl.Output[dsl.Metrics],
             report: dsl.Output[dsl.Markdown], html: dsl.Output[dsl.HTML], k: str = "10,20,50",
             split_at: str = "", test_days: float = 14.0, val_days: float = 14.0, oracle_uri: str = ""):
    """Scores the final models on test: "is this model better?" without a download.

    Args:
        snapshot: (shared)
        two_tower: The final two-tower model (train + validation).
        als: The final ALS model (train + validation).
        item2item: The final item-to-item model (train + validation).
        stage1: The ranker step's stage-1 folder: the ranker and the retrievers the warm route is
            chosen with on validation.
        tuned_two_tower: The two-tower tuning step's output (its trials go into the report).
        tuned_als: The ALS tuning step's output.
        tuned_item2item: The item-to-item tuning step's output.
        use_case: The use case to evaluate.
        k: Comma-separated cut-offs of the ranking metrics.
        split_at: (shared)
        test_days: (shared)
        val_days: Length of the validation window in days (routing is chosen on it).
        oracle_uri: ``oracle.parquet`` of a synthetic marketplace: adds the planted-affinity
            ceiling to the report; empty for real data.

    Returns:
        models: The servable folder that is published: final retrievers, the stage-1 ranker,
            ``routing.json`` and ``serving/`` data.
        evaluation: ``metrics.json``, ``report.md`` (with the tuning trials), plots, ``routing.json``
            and ``tuning/<model>.json``.
        metrics: Headline NDCG@10 / Recall@10 / MAP@10 of every model, for the Kubeflow UI.
        report: The evaluation report in Markdown with its plots embedded.
        html: The same tables per segment and the plots as one HTML page.
    """
    from startup_recs.pipeline import evaluate_steps, step

    info = evaluate_steps.evaluate(
        snapshot.path, two_tower.path, als.path, stage1.path, use_case, models.path, evaluation.path,
        report_md=report.path, report_html=html.path, k=k, split_at=split_at, test_days=test_days,
        val_days=val_days, item2item_dir=item2item.path,
        tuning_dirs=[tuned_two_tower.path, tuned_als.path, tuned_item2item.path], oracle_uri=oracle_uri)
    step.log_metrics(metrics, info["headline"])
    evaluation.metadata.update(info["metadata"])
    models.metadata.update(info["metadata"])
