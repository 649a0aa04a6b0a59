"""``python tests/integration/slow_predictor.py --bundle URI --port N --delay S [...]``: the real
predictor (``predictors.server.serve``: ModelServer, routes, guard, work queue) over real bundles,
whose recommender takes ``--delay`` more seconds per entity it answers.

The overload tests need requests that take a known time: on the tiny test data a batch of every
startup takes a few milliseconds, too little to fill a queue or pass a deadline reliably.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class Slow:
    """A servable that sleeps ``delay`` seconds per entity, then answers as ``model`` does."""

    def __init__(self, model: Any, delay: float) -> None:
        self._model = model
        self.delay = delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def recommend(self, entity_id: str, limit: int = 10) -> dict[str, Any]:
        time.sleep(self.delay)
        return self._model.recommend(entity_id, limit)

    def recommend_batch(self, entity_ids: Sequence[str], limit: Any = 10) -> list[dict[str, Any]]:
        time.sleep(self.delay * len(entity_ids))
        return self._model.recommend_batch(entity_ids, limit)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", action="append", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay", type=float, required=True, help="seconds per entity answered")
    p.add_argument("--request-timeout", type=float, default=2.0)
    p.add_argument("--max-queue", type=int, default=32)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import predictors  # noqa: F401 - imports kserve against a clean argv
    from predictors.server import serve
    from predictors.work_queue import Limits
    from startup_recs.serving.reload import default_loader

    def loader(local_dir: Path) -> Slow:
        return Slow(default_loader(local_dir), args.delay)

    serve(args.bundle, host="127.0.0.1", port=args.port, reload_interval=0,
          limits=Limits(args.request_timeout, args.max_queue), loader=loader)


if __name__ == "__main__":
    main()
