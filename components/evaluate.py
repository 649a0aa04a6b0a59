"""Evaluate: final retrievers + ranker on the test window; warm route chosen on validation."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(snapshot: dsl.Input[dsl.Dataset], two_tower: dsl.Input[dsl.Model], als: dsl.Input[dsl.Model],
             item2item: dsl.Input[dsl.Model], stage1: dsl.Input[dsl.Model],
             tuned_two_tower: dsl.Input[dsl.Artifact], tuned_als: dsl.Input[dsl.Artifact],
             tuned_item2item: dsl.Input[dsl.Artifact], use_case: str, models: dsl.Output[dsl.Model],
             evaluation: dsl.Output[dsl.Artifact], metrics: dsl.Output[dsl.Metrics],
             report: dsl.Output[dsl.Markdown], html: dsl.Output[dsl.HTML], k: str = "10,20,50",
             split_at: str = "", test_days: float = 14.0, val_days: float = 14.0, oracle_uri: str = ""):
    """``models``: the servable folder (final retrievers, ranker, routing.json, serving data);
    ``evaluation``: metrics.json, report.md (with the tuning trials), plots; ``metrics``/``report``/
    ``html`` for the KFP UI: "is this model better?" without a download."""
    from startup_recs.pipeline import steps

    info = steps.evaluate(snapshot.path, two_tower.path, als.path, stage1.path, use_case, models.path,
                          evaluation.path, report_md=report.path, report_html=html.path, k=k, split_at=split_at,
                          test_days=test_days, val_days=val_days, item2item_dir=item2item.path,
                          tuning_dirs=[tuned_two_tower.path, tuned_als.path, tuned_item2item.path],
                          oracle_uri=oracle_uri)
    steps.log_metrics(metrics, info["headline"])
    evaluation.metadata.update(info["metadata"])
    models.metadata.update(info["metadata"])
