"""KFP v2 components: one thin typed adapter per pipeline step over ``startup_recs.pipeline``.

Each component is a ``@dsl.component`` on the project's own image (no ``packages_to_install``,
``install_kfp_package=False``): typed ``Input``/``Output`` artifacts, ``import startup_recs``
inside the body, one call into the core, provenance (rows, data watermark, model version) into
``artifact.metadata``. The body is self-contained because KFP ships only the function source to
the pod (and ``kfp.local.SubprocessRunner`` runs it the same way).
"""

from components.datasets import dataset_als, dataset_ranker, dataset_two_tower
from components.evaluate import evaluate
from components.extract import extract, probe_entities, probe_source
from components.monitor import monitor
from components.publish import gate, publish
from components.reciprocal import publish_reciprocal, reciprocal
from components.refit import refit
from components.train import train_als, train_item2item, train_ranker, train_two_tower, train_two_tower_ddp
from components.tune import tune_als, tune_item2item, tune_two_tower

__all__ = [
    "probe_source", "probe_entities", "extract",
    "dataset_two_tower", "dataset_als", "dataset_ranker",
    "tune_two_tower", "tune_als", "tune_item2item",
    "train_two_tower", "train_two_tower_ddp", "train_als", "train_item2item", "train_ranker",
    "evaluate", "gate", "refit", "publish", "monitor", "reciprocal", "publish_reciprocal",
]
