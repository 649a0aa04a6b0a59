"""Two-tower training past one node: a Kubeflow Training Operator ``PyTorchJob`` that runs the
pipeline's own two-tower step under ``torchrun`` (DDP), reading the dataset artifact the pipeline
wrote and leaving a model folder the next steps read.

Three parts:

- :func:`job_spec`: the ``kubeflow.org/v1`` ``PyTorchJob`` (1 Master + ``workers - 1`` Workers,
  one pod per node, ``gpus`` GPUs each, the GPU pool's node selector and tolerations). Every pod
  runs ``python -m startup_recs.pipeline.two_tower_job run ...`` (:func:`main`).
- :func:`main` inside each pod: ``fetch`` the dataset artifact (and the tuning step's
  ``best_params.json``) from object storage to ``/tmp`` (``--from-bundle``: the ones a published
  bundle's manifest records, for a retrain outside the pipeline), ``torchrun`` the same
  :func:`startup_recs.pipeline.train_steps.train_two_tower` the one-node step calls (the trainer
  wraps the model in DistributedDataParallel when ``WORLD_SIZE > 1``; global rank 0 writes), then
  rank 0 uploads the model folder (+ ``job_info.json``) to ``output_uri``.
- :func:`run_job`, called by the KFP component: create the job through the Kubernetes API
  (an existing job of the same name, a retried task, is waited on rather than duplicated),
  poll its conditions until ``Succeeded`` (returns) or ``Failed`` / timeout (raises
  :class:`JobFailed`, naming the operator's reason and message; a timed-out job is deleted so it
  frees the GPUs).

Artifact URIs: KFP names MinIO artifacts ``minio://bucket/key``; that is the same object store as
``s3://bucket/key`` with ``AWS_ENDPOINT_URL`` (the ``recs-storage`` ConfigMap), see :func:`s3_uri`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from startup_recs.core import storage
from startup_recs.core.errors import ConfigError, RecsError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
JOB_INFO = "job_info.json"
WORK = "/tmp/two-tower-job"
MODULE = "startup_recs.pipeline.two_tower_job"


class JobFailed(RecsError):
    """The PyTorchJob failed, vanished or did not finish in time."""


def s3_uri(uri: str) -> str:
    """``minio://b/k`` (KFP's MinIO artifact scheme) -> ``s3://b/k``; ``s3://`` unchanged; a
    local path is refused (pods on other nodes cannot read it)."""
    if uri.startswith("minio://"):
        return "s3://" + uri[len("minio://"):]
    if uri.startswith("s3://"):
        return uri
    raise ConfigError(f"a PyTorchJob needs artifacts in object storage (s3:// or minio://), not {uri!r}; "
                      "set the pipeline root to a bucket or use tt_workers=1")


def job_name(output_uri: str, prefix: str = "two-tower-ddp") -> str:
    """A DNS-1123 name fixed by the output URI: a retried KFP task finds its own job again."""
    return f"{prefix}-{hashlib.sha256(output_uri.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class JobSettings:
    """What one distributed fit needs. ``workers``: pods (nodes) in all, Master included;
    ``gpus``: GPUs per pod (0 = CPU pods, gloo); ``train``: keyword arguments of
    ``train_steps.train_two_tower`` (``window``, ``epochs``, ``batch_size``, ``device``, ``seed``)."""

    use_case: str
    dataset_uri: str
    output_uri: str
    image: str
    tuned_uri: str = ""
    workers: int = 2
    gpus: int = 1
    train: Mapping[str, Any] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    cpu: str = "4"
    memory: str = "16Gi"
    secret: str = "recs-s3"
    config_map: str = "recs-storage"
    backoff_limit: int = 2
    service_account: str = ""


def pod_command(s: JobSettings) -> list[str]:
    """The container command of every pod: ``python -m ...two_tower_job run`` with the settings."""
    cmd = ["python", "-m", MODULE, "run", "--use-case", s.use_case, "--dataset-uri", s3_uri(s.dataset_uri),
           "--output-uri", s3_uri(s.output_uri), "--nproc-per-node", str(max(1, s.gpus))]
    if s.tuned_uri:
        cmd += ["--tuned-uri", s3_uri(s.tuned_uri)]
    for k, v in sorted(s.train.items()):
        if v is not None and v != "":
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def job_spec(name: str, s: JobSettings) -> dict[str, Any]:
    """The ``PyTorchJob`` body (``kubeflow.org/v1``) for :func:`run_job` / ``kubectl apply``."""
    if s.workers < 2:
        raise ConfigError(f"a PyTorchJob is for 2 or more workers (got {s.workers}); one node trains in the step")
    resources: dict[str, Any] = {"requests": {"cpu": s.cpu, "memory": s.memory, "ephemeral-storage": "10Gi"},
                                 "limits": {"cpu": s.cpu, "memory": s.memory, "ephemeral-storage": "50Gi"}}
    if s.gpus > 0:
        resources["requests"]["nvidia.com/gpu"] = s.gpus
        resources["limits"]["nvidia.com/gpu"] = s.gpus
    env_from = []
    if s.config_map:
        env_from.append({"configMapRef": {"name": s.config_map, "optional": True}})
    if s.secret:
        env_from.append({"secretRef": {"name": s.secret, "optional": True}})
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "pytorch",  # the Training Operator requires this container name
            "image": s.image,
            "imagePullPolicy": "IfNotPresent",
            "command": pod_command(s),
            "env": [{"name": "HOME", "value": "/tmp"}, {"name": "NCCL_DEBUG", "value": "WARN"},
                    {"name": "PYTHONUNBUFFERED", "value": "1"}],
            "envFrom": env_from,
            "resources": resources,
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "50Gi"}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}],
    }
    if s.service_account:
        pod["serviceAccountName"] = s.service_account
    if s.node_selector:
        pod["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        pod["tolerations"] = [dict(t) for t in s.tolerations]
    labels = {"app.kubernetes.io/name": "startup-recs", "app.kubernetes.io/component": "trainer",
              "startup-recs/use-case": s.use_case.replace("_", "-")}

    def replica(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "OnFailure",
                "template": {"metadata": {"labels": dict(labels)}, "spec": json.loads(json.dumps(pod))}}

    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": s.backoff_limit,
                          "ttlSecondsAfterFinished": 86400},
            "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(s.workers - 1)},
        },
    }


# --- creating and waiting (the KFP component's side) --------------------------------------------
def current_namespace(default: str = "kubeflow") -> str:
    """The pod's own namespace (service account mount), else ``default``."""
    p = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return p.read_text().strip() if p.is_file() else default


def custom_objects_api(host: str | None = None) -> Any:
    """``kubernetes.client.CustomObjectsApi``: in-cluster config in a pod, ``host`` when given
    (tests, ``kubectl proxy``), else the local kubeconfig."""
    from kubernetes import client, config

    if host:
        cfg = client.Configuration()
        cfg.host = host
        return client.CustomObjectsApi(client.ApiClient(cfg))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def job_state(obj: Mapping[str, Any]) -> tuple[str, str]:
    """``(state, message)`` from a PyTorchJob's ``status.conditions``: the latest condition whose
    status is True (``Created``/``Running``/``Restarting``/``Succeeded``/``Failed``/``Suspended``),
    ``Pending`` before any."""
    conds = [c for c in (obj.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"]
    if not conds:
        return "Pending", ""
    terminal = [c for c in conds if c.get("type") in ("Succeeded", "Failed")]
    c = terminal[-1] if terminal else conds[-1]
    return str(c.get("type")), f"{c.get('reason', '')}: {c.get('message', '')}".strip(": ")


def run_job(body: Mapping[str, Any], namespace: str, *, api: Any = None, poll_s: float = 15.0,
            timeout_s: float = 6 * 3600.0, sleep: Callable[[float], None] = time.sleep,
            max_api_errors: int = 5) -> dict[str, Any]:
    """Create ``body`` in ``namespace`` (or adopt the job of that name already there) and wait.

    Returns the final job object when it Succeeded. Raises :class:`JobFailed` when it Failed (with
    the operator's reason/message), disappeared, or ran past ``timeout_s`` (then it is deleted).
    Transient API errors (5xx, connection) are retried up to ``max_api_errors`` in a row.
    """
    from kubernetes.client.exceptions import ApiException

    api = api or custom_objects_api()
    name = body["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        log.info("created %s %s/%s", KIND, namespace, name)
    except ApiException as exc:
        if exc.status != 409:
            raise JobFailed(f"cannot create {KIND} {namespace}/{name}: {exc.status} {exc.reason}") from None
        log.info("%s %s/%s exists already (a retried task): waiting on it", KIND, namespace, name)
    deadline = time.monotonic() + timeout_s
    errors, last = 0, None
    while True:
        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            errors = 0
        except ApiException as exc:
            if exc.status == 404:
                raise JobFailed(f"{KIND} {namespace}/{name} disappeared while running") from None
            errors += 1
            if errors > max_api_errors or (exc.status is not None and exc.status < 500):
                raise JobFailed(f"cannot read {KIND} {namespace}/{name}: {exc.status} {exc.reason}") from None
            obj = None
        except OSError as exc:  # connection refused/reset: the API server restarting
            errors += 1
            if errors > max_api_errors:
                raise JobFailed(f"cannot reach the Kubernetes API for {namespace}/{name}: {exc}") from None
            obj = None
        if obj is not None:
            state, message = job_state(obj)
            if state != last:
                log.info("%s %s: %s %s", KIND, name, state, message)
                last = state
            if state == "Succeeded":
                return dict(obj)
            if state == "Failed":
                raise JobFailed(f"{KIND} {namespace}/{name} failed: {message or 'no reason given'}")
        if time.monotonic() >= deadline:
            with contextlib.suppress(ApiException):
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            raise JobFailed(f"{KIND} {namespace}/{name} did not finish within {timeout_s:.0f} s (deleted)")
        sleep(poll_s)


def train_distributed(settings: JobSettings, model_dir: str, *, namespace: str = "", timeout_s: float = 6 * 3600.0,
                      poll_s: float = 15.0, api: Any = None) -> dict[str, Any]:
    """The KFP component's body: run the job over ``settings`` and bring global rank 0's model
    folder to ``model_dir`` (the component's output artifact, uploaded by KFP as usual). Returns
    the two-tower step's provenance dict (``job_info.json``) plus the job's name."""
    name = job_name(s3_uri(settings.output_uri))
    ns = namespace or current_namespace()
    run_job(job_spec(name, settings), ns, api=api, poll_s=poll_s, timeout_s=timeout_s)
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage.download(s3_uri(settings.output_uri), out)
    info_file = out / JOB_INFO
    if not info_file.is_file():
        raise JobFailed(f"{KIND} {ns}/{name} succeeded but left no {JOB_INFO} in {settings.output_uri}")
    info = json.loads(info_file.read_text())
    info_file.unlink()  # the model folder holds the trainer's files only, as the one-node step's
    return {**info, "pytorchjob": f"{ns}/{name}", "workers": settings.workers}


# --- inside each pod -----------------------------------------------------------------------------
def bundle_data_uris(uri: str) -> dict[str, str]:
    """The data URIs a published bundle was trained on (``manifest.json["data"]``, recorded by the
    publish step): ``snapshot``, ``two_tower_dataset``, ``two_tower_tuned``. ``uri``: a bundle, a
    use-case folder with ``latest``, or the pointer."""
    from startup_recs.core import bundle

    data = bundle.trained_on(uri)
    if not data:
        raise ConfigError(f"{uri}: the manifest records no training data URIs (published before they were)")
    return data


def _fetch(args: argparse.Namespace, work: Path) -> tuple[Path, Path | None]:
    if args.from_bundle:
        uris = bundle_data_uris(args.from_bundle)
        if "two_tower_dataset" not in uris:
            raise ConfigError(f"{args.from_bundle}: no two-tower dataset URI in its manifest")
        args.dataset_uri = uris["two_tower_dataset"]
        args.tuned_uri = args.tuned_uri or uris.get("two_tower_tuned", "")
        log.info("training data of %s: %s", args.from_bundle, uris)
    data = storage.download(args.dataset_uri, work / "dataset")
    tuned = storage.download(args.tuned_uri, work / "tuned") if args.tuned_uri else None
    return data, tuned


def _train_argv(args: argparse.Namespace, data: Path, tuned: Path | None, out: Path) -> list[str]:
    argv = ["train", "--use-case", args.use_case, "--dataset-dir", str(data), "--out-dir", str(out)]
    if tuned is not None:
        argv += ["--tuned-dir", str(tuned)]
    for k in ("window", "epochs", "batch_size", "device", "seed"):
        v = getattr(args, k)
        if v is not None:
            argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def torchrun_command(args: argparse.Namespace, train_argv: list[str], env: Mapping[str, str]) -> list[str]:
    """``torchrun`` over this pod's processes. The operator's ``PET_NNODES`` / ``PET_NODE_RANK``
    (newer operators) or ``WORLD_SIZE`` / ``RANK`` (pods, this pod's index: one process per pod
    unless ``nprocPerNode`` is set) and ``MASTER_ADDR`` / ``MASTER_PORT`` become the rendezvous."""
    return [sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={env.get('PET_NNODES', env.get('WORLD_SIZE', '1'))}", f"--node-rank={node_rank(env)}",
            f"--nproc-per-node={args.nproc_per_node}",
            f"--master-addr={env.get('MASTER_ADDR', '127.0.0.1')}", f"--master-port={env.get('MASTER_PORT', '29500')}",
            "-m", MODULE, *train_argv]


def node_rank(env: Mapping[str, str]) -> str:
    """This pod's index among the job's pods (0 = Master)."""
    return str(env.get("PET_NODE_RANK", env.get("RANK", "0")))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="fetch, torchrun the two-tower step, upload (one pod)")
    run.add_argument("--use-case", required=True)
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset-uri", help="the two-tower dataset artifact (folder) the pipeline wrote")
    src.add_argument("--from-bundle", help="a published bundle / use-case URI: its manifest names the dataset")
    run.add_argument("--output-uri", required=True)
    run.add_argument("--tuned-uri", default="")
    run.add_argument("--nproc-per-node", type=int, default=1)
    run.add_argument("--work", default=WORK)
    train = sub.add_parser("train", help="one torchrun process: the two-tower step")
    train.add_argument("--use-case", required=True)
    train.add_argument("--dataset-dir", required=True)
    train.add_argument("--out-dir", required=True)
    train.add_argument("--tuned-dir", default=None)
    for p in (run, train):
        p.add_argument("--window", default=None)
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--device", default=None)
        p.add_argument("--seed", type=int, default=None)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if args.cmd == "train":
        from startup_recs.pipeline.train_steps import train_two_tower

        rank = int(os.environ.get("RANK", "0"))
        out = args.out_dir if rank == 0 else f"{args.out_dir}-rank{rank}"  # only rank 0's folder is kept
        info = train_two_tower(args.dataset_dir, args.use_case, out, window=args.window, epochs=args.epochs,
                               batch_size=args.batch_size, device=args.device, seed=args.seed,
                               params_dir=args.tuned_dir)
        if rank == 0:
            Path(out, JOB_INFO).write_text(json.dumps(info, indent=2, default=str))
        return 0
    work = Path(args.work)
    data, tuned = _fetch(args, work)
    out = work / "model"
    cmd = torchrun_command(args, _train_argv(args, data, tuned, out), os.environ)
    log.info("running %s", shlex.join(cmd))
    rc = subprocess.call(cmd)
    if rc != 0:
        return rc
    if node_rank(os.environ) == "0":  # the Master pod holds global rank 0's output
        storage.upload_dir(out, args.output_uri)
        log.info("uploaded %s to %s", out, args.output_uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
