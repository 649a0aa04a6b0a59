"""Image names, Dockerfiles and the images' install command, checked without Docker.

- ``startup_recs.core.images`` is the one source of image references: the manifests (kustomize
  ``images:``), the compiled pipeline (KFP ``base_image``), the Makefile/scripts all agree with it;
- the Dockerfiles share one pinned base, copy the lock before the source, end as a non-root user,
  and the predictor's entry point is ``python -m predictors``;
- the InferenceService container args are accepted by the predictor's real argument parser;
- the images' install command (``pip install -r requirements/lock.txt`` then ``--no-deps .``)
  works in a fresh venv and the entry points import (slow: a full dependency install).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from startup_recs import __version__
from startup_recs.core import images
from startup_recs.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OUR_IMAGE = re.compile(r"startup-recs-(base|trainer-gpu|predictor)")


@pytest.fixture
def default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images.REGISTRY_ENV, raising=False)


# --- the source -----------------------------------------------------------------------------------
def test_image_references_come_from_the_package_version(default_registry: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert images.image("predictor") == f"ghcr.io/startup-recs/startup-recs-predictor:{__version__}"
    assert list(images.all_images()) == ["base", "trainer-gpu", "predictor"]
    assert images.dockerfile("trainer-gpu") == "images/trainer-gpu.Dockerfile"
    monkeypatch.setenv(images.REGISTRY_ENV, "localhost:5001/recs/")
    assert images.image("base") == f"localhost:5001/recs/startup-recs-base:{__version__}"
    monkeypatch.setenv(images.REGISTRY_ENV, "Not A Registry")
    with pytest.raises(ConfigError, match="RECS_IMAGE_REGISTRY"):
        images.image("base")
    monkeypatch.delenv(images.REGISTRY_ENV)
    with pytest.raises(ConfigError, match="unknown image kind 'gpu'"):
        images.image("gpu")


def test_cli_prints_the_references(default_registry: None) -> None:
    out = subprocess.run([sys.executable, "-m", "startup_recs.core.images", "--format", "make"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [f"{k.upper().replace('-', '_')}_IMAGE={images.image(k)}" for k in images.KINDS]
    bad = subprocess.run([sys.executable, "-m", "startup_recs.core.images"], capture_output=True, text=True,
                         env={**os.environ, images.REGISTRY_ENV: "UPPER/case"})
    assert bad.returncode == 2 and bad.stderr.startswith("error: RECS_IMAGE_REGISTRY=")


# --- manifests ------------------------------------------------------------------------------------
def test_kustomize_tags_equal_the_package_version() -> None:
    assert images.check_manifests(MANIFESTS) == []
    res = subprocess.run([sys.executable, "-m", "startup_recs.core.images", "--check-manifests", str(MANIFESTS)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_check_and_sync_detect_and_fix_drift(tmp_path: Path) -> None:
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    kust = copy / "base" / "kustomization.yaml"
    kust.write_text(kust.read_text().replace(f'newTag: "{__version__}"', 'newTag: "0.0.9"'))
    generated = copy / "base" / "generated.yaml"
    generated.write_text(f"image: {images.DEFAULT_REGISTRY}/startup-recs-base:{__version__}\n")
    assert images.check_manifests(copy) == [f"{kust}: image startup-recs-predictor newTag='0.0.9', "
                                            f"package version is '{__version__}'"]
    generated.write_text("image: ghcr.io/startup-recs/startup-recs-base:0.0.9\n")
    assert any("startup-recs-base:0.0.9 has tag '0.0.9'" in p for p in images.check_manifests(copy))
    assert set(images.sync_manifests(copy)) == {kust, generated}
    assert images.check_manifests(copy) == []
    assert "# Image tags" in kust.read_text(), "sync keeps comments"
    assert generated.read_text() == f"image: ghcr.io/startup-recs/startup-recs-base:{__version__}\n"


def _render(target: str) -> list[dict[str, Any]]:
    res = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / target)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def _containers(obj: Any) -> list[dict[str, Any]]:
    """Every container mapping anywhere in ``obj`` (core kinds and CRDs)."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                found += [c for c in v if isinstance(c, dict) and "image" in c]
            found += _containers(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _containers(v)
    return found


def test_rendered_manifests_use_the_package_images(default_registry: None) -> None:
    seen = set()
    for target in ("base", "training", "overlays/production", "overlays/canary"):
        for c in _containers(_render(target)):
            m = OUR_IMAGE.search(c["image"])
            if m:
                assert c["image"] == images.image(m.group(1)), f"{target}: {c['image']}"
                seen.add(m.group(1))
    assert seen == {"predictor", "trainer-gpu"}


# --- pipeline -------------------------------------------------------------------------------------
_COMPILE = """
import sys, yaml
from pipelines.training import compile_pipeline
path = compile_pipeline(sys.argv[1])
ir = next(d for d in yaml.safe_load_all(open(path)) if d and "deploymentSpec" in d)
for name, ex in sorted(ir["deploymentSpec"]["executors"].items()):
    print(name, ex["container"]["image"])
"""


@pytest.mark.parametrize("registry", [None, "localhost:5001/recs"])
def test_compiled_pipeline_uses_the_package_images(registry: str | None, tmp_path: Path) -> None:
    """Every executor of the compiled IR runs one of our images, tagged with the package version;
    ``RECS_IMAGE_REGISTRY`` (what ``make push REGISTRY=...`` pushes to) flows into it."""
    pytest.importorskip("kfp")
    env = {k: v for k, v in os.environ.items() if k != images.REGISTRY_ENV}
    if registry:
        env[images.REGISTRY_ENV] = registry
    res = subprocess.run([sys.executable, "-c", _COMPILE, str(tmp_path / "p.yaml")], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    execs = dict(line.split(" ", 1) for line in res.stdout.strip().splitlines())
    reg = registry or images.DEFAULT_REGISTRY
    expected = {f"{reg}/startup-recs-base:{__version__}", f"{reg}/startup-recs-trainer-gpu:{__version__}"}
    assert len(execs) >= 8 and set(execs.values()) == expected
    gpu = {name for name, img in execs.items() if "trainer-gpu" in img}
    # the GPU image runs the two-tower steps and the publish refit (which refits the two-tower too)
    assert gpu and all("two-tower" in n or "two_tower" in n or n == "exec-refit" for n in gpu), gpu


# --- Makefile and scripts -------------------------------------------------------------------------
def test_makefile_and_scripts_take_images_from_the_package() -> None:
    texts = {p: p.read_text() for p in [ROOT / "Makefile", *(ROOT / "scripts").rglob("*.sh")]}
    for path, text in texts.items():
        assert not re.search(OUR_IMAGE.pattern + r":", text), f"{path}: hard-coded image reference"
    assert "python3 -m startup_recs.core.images" in texts[ROOT / "scripts" / "cluster" / "lib.sh"]
    for target in ("images", "push", "kind-up", "kind-demo", "kind-down", "minikube-up", "minikube-down",
                   "manifests-check", "tools"):
        assert re.search(rf"^{re.escape(target)}:", texts[ROOT / "Makefile"], re.M), f"make {target} missing"
    assert re.search(r"^test:.*\btools\b", texts[ROOT / "Makefile"], re.M), "make test must build the tools venv"


@pytest.mark.parametrize("registry", ["", "localhost:5001"])
def test_scripts_resolve_the_same_references(registry: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != images.REGISTRY_ENV}
    if registry:
        env[images.REGISTRY_ENV] = registry
    for kind in images.KINDS:
        res = subprocess.run(["bash", "-c", f'source scripts/cluster/lib.sh && image_ref {kind}'], cwd=ROOT,
                             capture_output=True, text=True, env=env, check=True)
        assert res.stdout.strip() == f"{registry or images.DEFAULT_REGISTRY}/startup-recs-{kind}:{__version__}"


# --- Dockerfiles ----------------------------------------------------------------------------------
def _dockerfile(kind: str) -> list[str]:
    return [ln.strip() for ln in (ROOT / images.dockerfile(kind)).read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


@pytest.mark.parametrize("kind", images.KINDS)
def test_dockerfile_structure(kind: str) -> None:
    lines = _dockerfile(kind)
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) == 2, "multi-stage: builder + runtime"
    assert all(re.match(r"FROM python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})? AS (builder|runtime)$", f)
               for f in froms), froms
    runtime = lines[lines.index(froms[1]):]
    user = [ln for ln in runtime if ln.startswith("USER ")]
    assert user and user[-1] != "USER root" and not user[-1].startswith("USER 0"), "runs as non-root"
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert any(ln.startswith("HEALTHCHECK") for ln in runtime)
    copy_lock = lines.index("COPY requirements/lock.txt requirements/lock.txt")
    install_lock = next(i for i, ln in enumerate(lines) if "pip install -r requirements/lock.txt" in ln)
    copy_src = lines.index("COPY . .")
    install_pkg = next(i for i, ln in enumerate(lines) if "pip install --no-deps ." in ln)
    assert copy_lock < install_lock < copy_src < install_pkg, "lock (cached layer) before the source"
    text = "\n".join(lines)
    assert not re.search(r"(?i)(aws_secret|password|token)\s*=", text), "no credentials in images"
    if kind == "predictor":
        assert runtime[-1] == 'ENTRYPOINT ["python", "-m", "predictors"]'
        assert "EXPOSE 8080 8081" in runtime
    if kind == "trainer-gpu":
        assert 'https://download.pytorch.org/whl/${TORCH_CUDA}" "torch==2.13.0"' in text
    lock_torch = re.search(r"^torch==(\S+)$", (ROOT / "requirements/lock.txt").read_text(), re.M)
    assert lock_torch and f'"torch=={lock_torch.group(1)}"' in text, "torch pinned as in the lock"


def test_all_images_share_one_base() -> None:
    bases = {f.split()[1] for k in images.KINDS for f in _dockerfile(k) if f.startswith("FROM ")}
    assert len(bases) == 1, bases


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics (last match wins; a match on a parent folder counts)."""
    excluded = False
    parts = path.split("/")
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        rx = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        rx = rx.replace(r"\?", "[^/]")
        if any(re.fullmatch(rx, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not neg
    return excluded


def test_dockerignore_keeps_data_models_and_venvs_out() -> None:
    pats = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    for out in (".venv/bin/python", ".venv-tools/bin/checkov", "data/marketplace.db", "models/two_tower.pth",
                "demo_out/startup_developer/v1/manifest.json", "manifests/overlays/kind/credentials.env",
                "tests/conftest.py", ".git/config", "src/startup_recs/__pycache__/x.pyc",
                "src/startup_recs/data.parquet", "benchmarks/bench.py"):
        assert _dockerignored(out, pats), f"{out} would enter the build context"
    for keep in ("pyproject.toml", "README.md", "requirements/lock.txt", "src/startup_recs/cli.py",
                 "predictors/__main__.py", "components/train.py", "pipelines/training.py"):
        assert not _dockerignored(keep, pats), f"{keep} is needed by the image build"


# --- the predictor accepts the manifests' args --------------------------------------------------
def test_inference_service_args_parse_with_the_predictor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The InferenceService container args go through ``python -m predictors``' own parser
    (``predictors.server.main``, with ``serve`` replaced by a recorder)."""
    server = pytest.importorskip("predictors.server")
    import kserve.model_server as kms

    from startup_recs.serving.reload import expand_sources

    monkeypatch.setattr(kms, "args", getattr(kms, "args", None))
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "serve", lambda bundles, **kw: calls.append({"bundles": bundles, **kw}))
    for target in ("base", "overlays/canary"):
        for d in _render(target):
            if d["kind"] != "InferenceService":
                continue
            uc = d["metadata"]["name"].replace("-", "_")
            args = [a.replace("/tmp/bundles", str(tmp_path / "bundles")) for a in
                    d["spec"]["predictor"]["containers"][0]["args"]]
            assert server.main(args) == 0
            call = calls.pop()
            assert call["port"] == 8080 and call["reload_interval"] == 30 and call["host"] == "0.0.0.0"
            sources = expand_sources(call["bundles"])
            expected = "/mnt/models" if "canaryTrafficPercent" in d["spec"]["predictor"] else f"s3://models/{uc}/latest"
            assert sources == {uc: expected}


# --- the images' install command ------------------------------------------------------------------
@pytest.mark.slow
def test_image_install_command_in_a_fresh_venv(tmp_path: Path) -> None:
    """What every Dockerfile runs (lock, then the project without deps), in a brand-new venv (no
    system site-packages), then the entry points: a broken dependency fails here, not in a
    cluster. pip takes torch 2.13.0 from the local wheel cache (the images use the CPU/CUDA index)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    # --no-compile: byte-compiling ~2 GB of site-packages is most of the time and proves nothing
    for cmd in (["-m", "pip", "install", "-q", "--no-compile", "-r", "requirements/lock.txt"],
                ["-m", "pip", "install", "-q", "--no-compile", "--no-deps", "."]):
        res = subprocess.run([py, *cmd], cwd=ROOT, capture_output=True, text=True, env=env, timeout=1500)
        assert res.returncode == 0, res.stderr[-3000:]
    # Import from the installed package, not the checkout: run from an empty folder.
    probe = ("import startup_recs, startup_recs.cli, startup_recs.core.images, predictors, predictors.server, "
             "components, pipelines.training, kfp, kserve, torch; "
             "print(startup_recs.__file__); print(startup_recs.__version__)")
    res = subprocess.run([py, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    where, version = res.stdout.split()[-2:]
    assert str(venv) in where and version == __version__
    for cmd in ([str(venv / "bin" / "recs"), "--version"], [py, "-m", "predictors", "--help"],
                [py, "-m", "startup_recs.core.images", "predictor"]):
        res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, f"{cmd}: {res.stderr[-2000:]}"
    assert "--bundle" in subprocess.run([py, "-m", "predictors", "--help"], cwd=tmp_path, capture_output=True,
                                        text=True, env=env, timeout=300).stdout
