"""``recs pipeline compile`` / ``submit``: the IR YAML, and runs on a Kubeflow Pipelines API.

``submit`` compiles, checks the API's health (a wrong host fails in a second with one line),
then creates a run, or with ``--schedule CRON`` a recurring run (the legacy guide's "automated
retraining pipeline"). Auth is kfp.Client's own: ``--token`` (or ``KF_PIPELINES_TOKEN``), the
in-cluster service-account token (``KF_PIPELINES_SA_TOKEN_PATH``), IAP client ids via the
``KF_PIPELINES_*`` variables kfp reads.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from startup_recs.core.errors import ConfigError, RecsError

log = logging.getLogger(__name__)

TOKEN_ENV = "KF_PIPELINES_TOKEN"


class SubmitError(RecsError):
    """The KFP API refused or could not be reached."""


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> typed pipeline arguments (types from the pipeline's signature:
    ints, floats, ``true/false``, lists as JSON or comma-separated)."""
    from pipelines.training import reverse_recommendation_training

    inputs = reverse_recommendation_training.component_spec.inputs or {}
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"bad --param {pair!r}: expected KEY=VALUE")
        if key not in inputs:
            raise ConfigError(f"unknown pipeline parameter {key!r}; known: {', '.join(sorted(inputs))}")
        kind = str(inputs[key].type).lower()
        try:
            if kind in ("integer", "int"):
                out[key] = int(raw)
            elif kind in ("float", "double", "number_double"):
                out[key] = float(raw)
            elif kind in ("boolean", "bool"):
                out[key] = raw.strip().lower() in ("1", "true", "yes")
            elif kind in ("list", "jsonarray"):
                out[key] = json.loads(raw) if raw.strip().startswith("[") else [s.strip() for s in raw.split(",") if s.strip()]
            else:
                out[key] = raw
        except ValueError:
            raise ConfigError(f"bad --param {key}={raw!r}: not a {kind}") from None
    return out


def required_missing(args: dict[str, Any]) -> list[str]:
    from pipelines.training import reverse_recommendation_training

    inputs = reverse_recommendation_training.component_spec.inputs or {}
    return [k for k, spec in inputs.items() if spec.default is None and not spec.optional and k not in args]


def cron6(expr: str) -> str:
    """KFP's cron has a seconds field: a standard 5-field expression gets ``0`` prepended."""
    fields = expr.split()
    if len(fields) == 5:
        return "0 " + expr.strip()
    if len(fields) == 6:
        return expr.strip()
    raise ConfigError(f"bad --schedule {expr!r}: expected a cron expression of 5 (or 6) fields")


def submit(host: str, params: dict[str, Any], *, namespace: str | None = None, experiment: str = "startup-recs",
           run_name: str | None = None, schedule: str | None = None, token: str | None = None,
           options: Any = None) -> dict[str, Any]:
    """Create a run (or a recurring run) of ``reverse_recommendation_training``; returns ids."""
    import kfp

    from pipelines.training import compile_pipeline

    missing = required_missing(params)
    if missing:
        raise ConfigError(f"missing pipeline parameter(s): {', '.join(missing)} (pass --param KEY=VALUE)")
    cron = cron6(schedule) if schedule else None
    token = token or os.environ.get(TOKEN_ENV) or None
    try:
        client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)
        client.get_kfp_healthz()
    except Exception as exc:  # noqa: BLE001 - any transport/auth failure is "cannot reach"
        raise SubmitError(f"cannot reach Kubeflow Pipelines at {host}: {_first_line(exc)}") from None
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(str(Path(tmp) / "reverse_recommendation_training.yaml"), options)
        try:
            if cron:
                exp = client.create_experiment(experiment, namespace=namespace)
                job = client.create_recurring_run(
                    experiment_id=exp.experiment_id, job_name=run_name or "reverse-recommendation-retraining",
                    cron_expression=cron, pipeline_package_path=package, params=params, max_concurrency=1)
                out = {"recurring_run_id": job.recurring_run_id, "experiment_id": exp.experiment_id, "cron": cron}
            else:
                res = client.create_run_from_pipeline_package(
                    package, arguments=params, run_name=run_name, experiment_name=experiment, namespace=namespace)
                out = {"run_id": res.run_id}
        except Exception as exc:  # noqa: BLE001 - the API's answer, one line
            raise SubmitError(f"Kubeflow Pipelines at {host} refused the run: {_first_line(exc)}") from None
    log.info("submitted: %s", out)
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
