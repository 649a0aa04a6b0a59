"""Container image names and tags: the one place they come from.

Every image reference in the project is derived here, from the package version, the way KFP's
own GCPC components tag their images:

- the pipeline's ``base_image`` (``components/``: ``image("base")``, ``image("trainer-gpu")``),
- the Makefile's ``images`` / ``push`` / ``kind-demo`` targets (``python -m startup_recs.core.images``),
- the kustomize ``images:`` entries of ``manifests/`` (kept equal by
  ``python -m startup_recs.core.images --check-manifests``, which a test runs).

A reference is ``<registry>/startup-recs-<kind>:<version>``. The registry defaults to
:data:`DEFAULT_REGISTRY` and is overridden by the ``RECS_IMAGE_REGISTRY`` environment variable
(``make push REGISTRY=...`` sets it). This module imports nothing heavy: the Makefile calls it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from startup_recs import __version__
from startup_recs.core.errors import ConfigError

DEFAULT_REGISTRY = "ghcr.io/startup-recs"
REGISTRY_ENV = "RECS_IMAGE_REGISTRY"
#: The images the project builds, each from ``images/<kind>.Dockerfile``.
KINDS: tuple[str, ...] = ("base", "trainer-gpu", "predictor")
#: Image name placeholder used in the kustomize manifests; kustomize's ``images:`` rewrites it.
MANIFEST_NAME_PREFIX = "startup-recs-"

_HARD_CODED = re.compile(r"startup-recs-(base|trainer-gpu|predictor):([A-Za-z0-9._\-]+)")
_REGISTRY_RE = re.compile(r"^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([a-z0-9._\-]*[a-z0-9])?)*$")


def registry() -> str:
    """The registry (host[:port][/namespace]) images are pushed to and pulled from."""
    value = os.environ.get(REGISTRY_ENV, "").strip().rstrip("/") or DEFAULT_REGISTRY
    if not _REGISTRY_RE.match(value):
        raise ConfigError(f"{REGISTRY_ENV}={value!r} is not a registry like 'ghcr.io/org' or 'localhost:5000'")
    return value


def tag() -> str:
    """The image tag: the package version (``startup_recs.__version__``)."""
    return __version__


def name(kind: str) -> str:
    """Repository name without registry or tag, e.g. ``startup-recs-predictor``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown image kind {kind!r}; expected one of {', '.join(KINDS)}")
    return f"{MANIFEST_NAME_PREFIX}{kind}"


def image(kind: str) -> str:
    """Full reference ``<registry>/startup-recs-<kind>:<version>`` for ``kind`` in :data:`KINDS`."""
    return f"{registry()}/{name(kind)}:{tag()}"


def all_images() -> dict[str, str]:
    """``{kind: reference}`` for every image, in build order."""
    return {k: image(k) for k in KINDS}


def dockerfile(kind: str) -> str:
    """Path of the Dockerfile of ``kind``, relative to the repository root."""
    name(kind)  # validates
    return f"images/{kind}.Dockerfile"


# --- kustomize `images:` --------------------------------------------------------------------------
def kustomize_images() -> list[dict[str, str]]:
    """The ``images:`` list every kustomization that runs our containers carries.

    Manifests name containers by the bare repository name (``startup-recs-predictor``); kustomize
    rewrites it to ``newName``/``newTag``. ``newTag`` is always :func:`tag`; ``newName`` uses the
    default registry (an overlay may point it elsewhere with ``kustomize edit set image``).
    """
    return [
        {"name": name(k), "newName": f"{DEFAULT_REGISTRY}/{name(k)}", "newTag": tag()} for k in KINDS
    ]


def check_manifests(root: Path) -> list[str]:
    """Problems with image tags under ``root`` (a ``manifests/`` folder); empty when consistent.

    Every ``images:`` entry of a ``kustomization.yaml`` that names one of our images must carry
    ``newTag`` equal to the package version, and so must any full reference written out in a YAML
    file (generated manifests such as the Katib experiments, which kustomize does not rewrite).
    """
    import yaml  # PyYAML: a dependency of kfp/kserve/kubernetes, present in every image

    problems: list[str] = []
    ours = {name(k) for k in KINDS}
    for path in sorted(root.rglob("*.yaml")):
        text = path.read_text()
        for m in _HARD_CODED.finditer(text):
            if m.group(2) != tag():
                problems.append(f"{path}: {m.group(0)} has tag {m.group(2)!r}, package version is {tag()!r}")
        if path.name != "kustomization.yaml":
            continue
        doc = yaml.safe_load(text) or {}
        for entry in doc.get("images", []) or []:
            if entry.get("name") in ours and str(entry.get("newTag")) != tag():
                problems.append(f"{path}: image {entry.get('name')} newTag={entry.get('newTag')!r}, "
                                f"package version is {tag()!r}")
    return problems


def sync_manifests(root: Path) -> list[Path]:
    """Rewrite the tags of our images under ``root`` to :func:`tag`: ``newTag`` of kustomize
    ``images:`` entries and full references written out in YAML. A line-level edit (comments and
    layout stay as written). Returns the files changed.
    """
    changed: list[Path] = []
    pattern = re.compile(
        r"(-\s+name:\s+(?:startup-recs-(?:base|trainer-gpu|predictor))\s*\n(?:\s+newName:.*\n)?\s+newTag:\s*)(\S+)"
    )
    for path in sorted(root.rglob("*.yaml")):
        text = path.read_text()
        new = pattern.sub(lambda m: f"{m.group(1)}\"{tag()}\"", text) if path.name == "kustomization.yaml" else text
        new = _HARD_CODED.sub(lambda m: f"startup-recs-{m.group(1)}:{tag()}", new)
        if new != text:
            tmp = path.with_suffix(".yaml.tmp")
            tmp.write_text(new)
            tmp.replace(path)
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m startup_recs.core.images``: print image references (the Makefile reads this)."""
    p = argparse.ArgumentParser(prog="python -m startup_recs.core.images", description=__doc__.splitlines()[0])
    p.add_argument("kind", nargs="?", choices=KINDS, help="print only this image's reference")
    p.add_argument("--format", choices=["ref", "make", "dockerfile", "tag"], default="ref",
                   help="ref: 'kind reference' lines; make: KIND_IMAGE=ref lines; "
                        "dockerfile: the kind's Dockerfile; tag: the version tag only")
    p.add_argument("--check-manifests", metavar="DIR", type=Path, default=None,
                   help="exit 1 when a kustomization under DIR carries another tag")
    p.add_argument("--sync-manifests", metavar="DIR", type=Path, default=None,
                   help="rewrite newTag of our images under DIR to the package version")
    args = p.parse_args(argv)
    try:
        if args.sync_manifests:
            for path in sync_manifests(args.sync_manifests):
                print(f"updated {path}")
            return 0
        if args.check_manifests:
            problems = check_manifests(args.check_manifests)
            for line in problems:
                print(line, file=sys.stderr)
            return 1 if problems else 0
        kinds = [args.kind] if args.kind else list(KINDS)
        for k in kinds:
            if args.format == "tag":
                print(tag())
                break
            if args.format == "dockerfile":
                print(dockerfile(k))
            elif args.format == "make":
                print(f"{k.upper().replace('-', '_')}_IMAGE={image(k)}")
            else:
                print(image(k) if args.kind else f"{k} {image(k)}")
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
