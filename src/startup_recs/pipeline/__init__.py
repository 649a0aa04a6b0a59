"""The training pipeline's steps as plain Python functions over folders: one per KFP component.

The components in ``components/`` are thin typed adapters over these (artifact paths in, a flat
provenance dict out into ``artifact.metadata``); ``benchmarks/bench_pipeline.py`` calls them
directly in one process to measure what kfp.local adds. Each step logs its progress, reads only
its input folders and writes only its output folder, and returns JSON scalars: rows, the data
watermark, and for models a content-derived version.

- :mod:`~startup_recs.pipeline.data_steps`: ``probe_source``, ``extract``, ``dataset_two_tower``,
  ``dataset_als``, ``dataset_ranker``;
- :mod:`~startup_recs.pipeline.tune_steps`: ``tune`` (writes ``best_params.json``), ``tuned_params``;
- :mod:`~startup_recs.pipeline.train_steps`: ``train_two_tower``, ``train_als``, ``train_item2item``,
  ``train_ranker``;
- :mod:`~startup_recs.pipeline.evaluate_steps`: ``evaluate``, ``headline_metrics``;
- :mod:`~startup_recs.pipeline.publish_steps`: ``gate``, ``publish``;
- :mod:`~startup_recs.pipeline.two_tower_job`: the two-tower step as a Kubeflow PyTorchJob;
- shared: :mod:`~startup_recs.pipeline.step` (the ``@step`` decorator, ``log_metrics``),
  :mod:`~startup_recs.pipeline.folders` (artifact folders, provenance, ``dir_digest``),
  :mod:`~startup_recs.pipeline.urls` (database URL check and masking),
  :mod:`~startup_recs.pipeline.ui_report` (what the Kubeflow UI shows beside the evaluation report).
"""
