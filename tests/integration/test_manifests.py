"""Static checks of the Kubernetes manifests, Dockerfiles and cluster scripts (no Docker, no
cluster: what CI can verify).

- every kustomize overlay renders with ``kubectl kustomize`` (kubectl v1.32, kustomize v5);
- core resources validate with ``kubernetes-validate --strict`` (offline schemas, k8s 1.32);
- InferenceServices validate strictly against KServe's own model classes (``kserve.models``) and
  the PyTorchJob against the Training Operator's (``kubeflow.training.models``), so a misspelled
  field fails;
- every container, in core kinds and custom resources alike, runs non-root without privilege
  escalation, with a read-only root filesystem and resource requests and limits;
- ``checkov`` passes on the rendered manifests and the Dockerfiles, ``hadolint`` on the
  Dockerfiles, ``shellcheck`` on the scripts.

The tools live in ``.venv-tools`` (``make tools``; ``make test`` builds it first). Locally
secrets come from gitignored env files; the tests render a copy of ``manifests/`` with
placeholder files, never the developer's real ones.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
TOOLS = ROOT / ".venv-tools" / "bin"
sys.path.insert(0, str(Path(__file__).parent))
import k8s_models  # noqa: E402

OVERLAYS = ["kind", "minikube", "production", "production-serverless", "canary"]
LOCAL = ["kind", "minikube"]
KUBE_VERSION = "1.32.0"
CRD_KINDS = {"InferenceService", "PyTorchJob"}
# Kinds whose pods run long enough to need probes.
SERVING_KINDS = {"Deployment", "InferenceService"}

# checkov checks skipped, each with the reason it does not apply here.
CHECKOV_SKIPS = {
    "CKV_K8S_43": "images are pinned by tag = package version (startup_recs.core.images); the digest exists "
                  "only after `make push`, and kind side-loads images by tag",
    "CKV_K8S_15": "imagePullPolicy Always would defeat `kind load docker-image` (no registry in kind); "
                  "our tags are immutable versions",
    "CKV_K8S_35": "the AWS SDK (boto3), MinIO and PostgreSQL read credentials from environment "
                  "variables; the values come from a Secret, never from the manifests",
}


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} missing: run `make tools` (make test does it first)")
    return str(path)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)


@pytest.fixture(scope="module")
def manifests_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``manifests/`` copied, with the gitignored env files replaced by placeholder ones."""
    dst = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, dst, ignore=shutil.ignore_patterns("*.env"))
    for overlay in LOCAL:
        d = dst / "overlays" / overlay
        for example in d.glob("*.env.example"):
            (d / example.name.removesuffix(".example")).write_text(example.read_text())
    return dst


@pytest.fixture(scope="module")
def rendered(manifests_copy: Path) -> dict[str, list[dict[str, Any]]]:
    """``{overlay: [documents]}`` of ``kubectl kustomize`` for every overlay (plus base, training)."""
    out = {}
    for target in [*OVERLAYS, "base", "training"]:
        path = manifests_copy / ("overlays/" + target if target in OVERLAYS else target)
        res = run(["kubectl", "kustomize", str(path)])
        assert res.returncode == 0, f"kubectl kustomize {target} failed:\n{res.stderr}"
        out[target] = [d for d in yaml.safe_load_all(res.stdout) if d]
    return out


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(where, pod spec)`` of every pod a document runs, core kinds and our CRDs alike."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [(kind, spec["template"]["spec"])]
    if kind == "InferenceService":
        return [(f"{kind}.predictor", spec["predictor"])]
    if kind == "PyTorchJob":
        return [(f"{kind}.{r}", s["template"]["spec"]) for r, s in spec["pytorchReplicaSpecs"].items()]
    return []


# --- rendering and contents -----------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_expected_objects(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    isvcs = by_kind(docs, "InferenceService")
    reverse = {"startup-developer", "startup-investor"}
    # the laptop clusters serve all four use cases (components/forward); production the reverse two
    assert set(isvcs) == (reverse | {"developer-startup", "investor-startup"} if overlay in LOCAL else reverse)
    assert all(d["metadata"].get("namespace") == "recs" for d in docs if d["kind"] != "Namespace")
    sa = by_kind(docs, "ServiceAccount")["recs-predictor"]
    assert {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-usehttps"} <= set(sa["metadata"]["annotations"])
    assert "recs-storage" in by_kind(docs, "ConfigMap")
    for name, isvc in isvcs.items():
        uc = name.replace("-", "_")
        pred = isvc["spec"]["predictor"]
        c = pred["containers"][0]
        assert c["image"].split("/")[-1].startswith("startup-recs-predictor:")
        assert pred["serviceAccountName"] == "recs-predictor"
        assert 1 <= pred["minReplicas"] <= pred["maxReplicas"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert pred["annotations"]["prometheus.io/scrape"] == "true"
        assert pred["annotations"]["prometheus.io/path"] == "/metrics"
        refs = {(k, v["name"]) for e in c["envFrom"] for k, v in e.items()}
        assert refs == {("configMapRef", "recs-storage"), ("secretRef", "recs-s3-readonly")}
        bundle = c["args"][0]
        if overlay == "canary" and name == "startup-developer":
            # pinned immutable version through KServe's storage initializer, at 10% of traffic
            assert pred["canaryTrafficPercent"] == 10
            assert bundle == f"--bundle={uc}=/mnt/models"
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["STORAGE_URI"].startswith(f"s3://models/{uc}/v")
        else:
            assert "canaryTrafficPercent" not in pred
            assert bundle == f"--bundle={uc}=s3://models/{uc}/latest"
        if overlay in LOCAL and name in reverse:  # the forward twin too: reverse answers are reciprocal
            twin = "_".join(reversed(uc.split("_")))
            assert c["args"][1] == f"--bundle={twin}=s3://models/{twin}/latest"
        mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        assert mode == ("Knative" if overlay in ("production-serverless", "canary") else "Standard")
    if overlay in LOCAL:
        assert {"minio", "marketplace-db"} <= set(by_kind(docs, "Deployment"))
        job = by_kind(docs, "Job")["minio-buckets"]
        script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
        assert "mlpipeline models" in script
        secrets = by_kind(docs, "Secret")
        assert set(secrets) == {"recs-s3", "recs-s3-readonly", "marketplace-db"}
        for name in ("recs-s3", "recs-s3-readonly"):
            assert set(secrets[name]["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert "mc admin user add" in script and "recs-read-models" in script  # the read-only user
        cm = by_kind(docs, "ConfigMap")["recs-storage"]["data"]
        assert cm["AWS_ENDPOINT_URL"] == "http://minio.recs.svc.cluster.local:9000"
        assert "PyTorchJob" not in {d["kind"] for d in docs}
    else:
        assert "Secret" not in {d["kind"] for d in docs}, "production Secrets are created out of band"
        job = by_kind(docs, "PyTorchJob")["two-tower-ddp"]
        specs = job["spec"]["pytorchReplicaSpecs"]
        assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 3
        for role in ("Master", "Worker"):
            pod = specs[role]["template"]["spec"]
            assert pod["nodeSelector"] == {"recs.startup/pool": "gpu"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            c = pod["containers"][0]
            assert c["name"] == "pytorch"  # the operator's required container name
            assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
            # the pipeline's own two-tower step under torchrun, on the data the published bundle records
            assert c["command"][:4] == ["python", "-m", "startup_recs.pipeline.two_tower_job", "run"]
            assert "--from-bundle=$(MODELS_URI)" in c["command"]
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["MODELS_URI"] == "s3://models/startup_developer"
            assert c["image"].split("/")[-1].startswith("startup-recs-trainer-gpu:")
        assert set(by_kind(docs, "PodDisruptionBudget")) == {"startup-developer-predictor", "startup-investor-predictor"}


def test_kind_cluster_config() -> None:
    cfg = yaml.safe_load((MANIFESTS / "kind" / "cluster.yaml").read_text())
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cfg["kind"] == "Cluster"
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles.count("control-plane") == 1 and "worker" in roles
    images = {n["image"] for n in cfg["nodes"]}
    assert len(images) == 1 and images.pop().startswith("kindest/node:v1.32."), "pin one node image"


# --- schemas --------------------------------------------------------------------------------------
def test_core_resources_validate_strictly(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    files = []
    for target, docs in rendered.items():
        core = [d for d in docs if d["kind"] not in CRD_KINDS]
        if core:
            f = tmp_path / f"{target}.yaml"
            f.write_text(yaml.safe_dump_all(core))
            files.append(str(f))
    res = run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBE_VERSION, *files])
    assert res.returncode == 0, res.stdout + res.stderr


def test_kubernetes_validate_rejects_a_misspelled_field(rendered: dict[str, list[dict[str, Any]]],
                                                        tmp_path: Path) -> None:
    """The strict check is not vacuous: one typo in a Deployment fails it."""
    dep = copy.deepcopy(by_kind(rendered["kind"], "Deployment")["minio"])
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = dep["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(dep))
    res = run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBE_VERSION, str(f)])
    assert res.returncode != 0 and "readinesProbe" in res.stdout + res.stderr


@pytest.fixture(scope="module")
def kserve_resolver() -> k8s_models.Resolver:
    return k8s_models.make_resolver("kserve.models", "kubernetes.client.models")


def test_inference_services_match_kserve_models(rendered: dict[str, list[dict[str, Any]]],
                                                kserve_resolver: k8s_models.Resolver) -> None:
    unresolved: set[str] = set()
    errs = []
    for target, docs in rendered.items():
        for d in docs:
            if d["kind"] == "InferenceService":
                assert d["apiVersion"] == "serving.kserve.io/v1beta1"
                errs += [f"{target}: {p}" for p in k8s_models.problems(
                    d, "V1beta1InferenceService", kserve_resolver, unresolved=unresolved)]
    assert not errs, "\n".join(errs)
    assert not unresolved, f"fields whose schema could not be checked: {sorted(unresolved)}"


@pytest.mark.parametrize("mutate, expected", [
    (lambda p: p.__setitem__("minReplica", 1), "minReplica: unknown field of V1beta1PredictorSpec"),
    (lambda p: p["containers"][0].__setitem__("readinesProbe", {}), "readinesProbe: unknown field of V1Container"),
    (lambda p: p["containers"][0]["ports"][0].__setitem__("containerPort", "8080"), "expected int"),
    (lambda p: p.__setitem__("canaryTrafficPercent", "10"), "expected int"),
    (lambda p: p["containers"][0].pop("name"), "must not be `None`"),
])
def test_kserve_check_rejects_bad_fields(rendered: dict[str, list[dict[str, Any]]],
                                         kserve_resolver: k8s_models.Resolver, mutate: Any, expected: str) -> None:
    isvc = copy.deepcopy(by_kind(rendered["kind"], "InferenceService")["startup-developer"])
    mutate(isvc["spec"]["predictor"])
    errs = k8s_models.problems(isvc, "V1beta1InferenceService", kserve_resolver)
    assert any(expected in e for e in errs), errs


def test_pytorchjob_matches_training_operator_models(rendered: dict[str, list[dict[str, Any]]],
                                                     tmp_path: Path) -> None:
    """Checked in .venv-tools (kubeflow-training's pins conflict with the runtime lock)."""
    good = tmp_path / "production.yaml"
    good.write_text(yaml.safe_dump_all(rendered["production"]))
    script = str(Path(k8s_models.__file__))
    res = run([tool("python"), script, str(good)])
    assert res.returncode == 0 and "checked 1 PyTorchJob(s): 0 problem(s)" in res.stdout, res.stdout + res.stderr
    job = copy.deepcopy(by_kind(rendered["production"], "PyTorchJob")["two-tower-ddp"])
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["replica"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(job))
    res = run([tool("python"), script, str(bad)])
    assert res.returncode == 1 and "replica: unknown field of KubeflowOrgV1ReplicaSpec" in res.stdout, res.stdout


# --- security and resources of every container ----------------------------------------------------
def test_every_container_is_locked_down_and_sized(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """checkov cannot see inside custom resources; this covers every pod, CRDs included."""
    errs = []
    seen = 0
    for target, docs in rendered.items():
        for d in docs:
            for where, pod in pod_specs(d):
                name = f"{target}/{d['kind']}/{d['metadata']['name']} ({where})"
                psc = pod.get("securityContext", {})
                if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser", 0) >= 10000:
                    errs.append(f"{name}: pod must set runAsNonRoot and a uid >= 10000")
                if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                    errs.append(f"{name}: seccompProfile RuntimeDefault missing")
                if pod.get("automountServiceAccountToken") is not False and d["kind"] != "InferenceService":
                    errs.append(f"{name}: automountServiceAccountToken should be false")
                for c in pod.get("containers", []) + pod.get("initContainers", []):
                    seen += 1
                    csc = c.get("securityContext", {})
                    cname = f"{name} container {c['name']}"
                    if csc.get("allowPrivilegeEscalation") is not False:
                        errs.append(f"{cname}: allowPrivilegeEscalation must be false")
                    if csc.get("readOnlyRootFilesystem") is not True:
                        errs.append(f"{cname}: readOnlyRootFilesystem must be true")
                    if csc.get("capabilities", {}).get("drop") != ["ALL"]:
                        errs.append(f"{cname}: capabilities must drop ALL")
                    if csc.get("privileged"):
                        errs.append(f"{cname}: privileged")
                    res = c.get("resources", {})
                    for part in ("requests", "limits"):
                        if not {"cpu", "memory"} <= set(res.get(part, {})):
                            errs.append(f"{cname}: {part} cpu and memory required")
                    image = c["image"]
                    if ":" not in image.split("/")[-1] or image.endswith(":latest"):
                        errs.append(f"{cname}: image {image} needs a fixed tag")
                    if d["kind"] in SERVING_KINDS and not ("readinessProbe" in c and "livenessProbe" in c):
                        errs.append(f"{cname}: readiness and liveness probes required")
                    if any("value" in e and any(s in e["name"] for s in ("SECRET", "PASSWORD", "TOKEN"))
                           for e in c.get("env", [])):
                        errs.append(f"{cname}: a secret-looking env var has a literal value")
    assert seen >= 20
    assert not errs, "\n".join(errs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_predictors_hold_only_the_read_only_key_behind_a_network_policy(
        rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """No predictor pod can write to the bucket (it gets recs-s3-readonly, never recs-s3, through
    envFrom, env or its ServiceAccount), and only the ingress path and the metrics scraper may
    call one (NetworkPolicy on KServe's ``component: predictor`` pod label)."""
    docs = rendered[overlay]
    sa = by_kind(docs, "ServiceAccount")["recs-predictor"]
    assert [s["name"] for s in sa.get("secrets", [])] == ["recs-s3-readonly"]
    for name, isvc in by_kind(docs, "InferenceService").items():
        text = yaml.safe_dump(isvc["spec"]["predictor"])
        assert "recs-s3-readonly" in text and "name: recs-s3\n" not in text, name
    pol = by_kind(docs, "NetworkPolicy")["recs-predictor"]["spec"]
    assert pol["podSelector"] == {"matchLabels": {"component": "predictor"}}
    assert pol["policyTypes"] == ["Ingress"]
    sources = [f for rule in pol["ingress"] for f in rule["from"]]
    assert all("namespaceSelector" in f for f in sources), "every source is pinned to a namespace"
    assert not any(f == {"podSelector": {}} or f.get("namespaceSelector") == {} for f in sources)
    names = set()
    for f in sources:
        ns = f["namespaceSelector"]
        names |= set(ns.get("matchLabels", {}).values())
        for e in ns.get("matchExpressions", []):
            names |= set(e["values"])
    assert names == {"istio-system", "ingress-nginx", "knative-serving", "monitoring"}
    scraper = next(f for f in sources if f["namespaceSelector"].get("matchLabels") == {
        "kubernetes.io/metadata.name": "monitoring"})
    assert scraper["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert {p["port"] for rule in pol["ingress"] for p in rule["ports"]} == {8080, 8012, 9091}


def test_no_secret_values_are_committed() -> None:
    """Secrets are generated from gitignored env files; committed YAML holds none."""
    tracked = subprocess.run(["git", "ls-files", "manifests"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked, "manifests/ not tracked"
    for f in tracked:
        assert not f.endswith(".env"), f"{f}: env files with credentials must not be committed"
        if f.endswith(".yaml"):
            for d in yaml.safe_load_all((ROOT / f).read_text()):
                if isinstance(d, dict) and d.get("kind") == "Secret":
                    pytest.fail(f"{f}: a literal Secret; use the overlay's secretGenerator")
    for overlay in LOCAL:
        for env in ("credentials.env", "credentials-readonly.env"):
            probe = f"manifests/overlays/{overlay}/{env}"
            ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT)
            assert ignored.returncode == 0, f"{probe} is not gitignored"


# --- linters --------------------------------------------------------------------------------------
def test_checkov_passes_on_rendered_manifests_and_dockerfiles(rendered: dict[str, list[dict[str, Any]]],
                                                               tmp_path: Path) -> None:
    scan = tmp_path / "scan"
    scan.mkdir()
    for target in OVERLAYS:
        docs = copy.deepcopy(rendered[target])
        for d in docs:
            if d["kind"] == "Secret":
                # the test's own placeholder values (a real render holds the random ones from the
                # gitignored env files); the secrets scan is for what is committed, below
                d["data"] = {k: "" for k in d.get("data", {})}
        (scan / f"{target}.yaml").write_text(yaml.safe_dump_all(docs))
    for f in (ROOT / "images").glob("*.Dockerfile"):
        shutil.copy(f, scan / f.name)
    for f in (ROOT / "scripts").rglob("*.sh"):
        shutil.copy(f, scan / f"script-{f.name}")
    res = run([tool("checkov"), "-d", str(scan), "--framework", "kubernetes", "dockerfile", "secrets",
               "--skip-download", "--quiet", "--compact", "-o", "json",
               "--skip-check", ",".join(CHECKOV_SKIPS)])
    reports = json.loads(res.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    summary = {r["check_type"]: r["summary"] for r in reports}
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})"
              for r in reports for c in r["results"].get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    assert summary["kubernetes"]["passed"] > 300 and summary["dockerfile"]["passed"] > 100, summary


def test_hadolint_passes() -> None:
    files = sorted(str(f) for f in (ROOT / "images").glob("*.Dockerfile"))
    assert len(files) == 3
    res = run([tool("hadolint"), "--failure-threshold", "info", *files])
    assert res.returncode == 0, res.stdout + res.stderr


def test_shellcheck_passes() -> None:
    scripts = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "scripts").rglob("*.sh"))
    assert {"scripts/images.sh", "scripts/cluster/kind-up.sh", "scripts/cluster/kind-demo.sh"} <= set(scripts)
    res = run([tool("shellcheck"), "-x", *scripts], cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    for s in scripts:
        text = (ROOT / s).read_text()
        assert "set -euo pipefail" in text or "lib.sh" in text, f"{s}: needs strict mode (directly or via lib.sh)"
