"""Strict checks of custom resources against the OpenAPI-generated Python model classes of their
own SDKs: KServe's ``kserve.models`` (InferenceService) and the Kubeflow Training Operator's
``kubeflow.training.models`` (PyTorchJob), with ``kubernetes.client.models`` for the embedded core
types (containers, pod templates, probes...).

Why not the SDKs' deserializers: they silently drop unknown keys, so ``minReplica:`` (a typo)
would pass. :func:`problems` walks the object against each class's ``attribute_map`` /
``openapi_types``: an unknown field, a wrong JSON type, or a missing required field (the model's
own constructor validation) is a problem, with its path. Runs in the project venv (kserve) and,
as a script, in ``.venv-tools`` (kubeflow-training), whose pins conflict with the runtime lock::

    .venv-tools/bin/python tests/integration/k8s_models.py rendered.yaml   # checks PyTorchJobs
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from typing import Any

Resolver = Callable[[str], Any]

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "date": (str,),
    "datetime": (str,),
}
_QUANTITY_PATH = re.compile(r"\.(limits|requests|overhead)\.[^.\[]+(\.[^.\[]+)*$|\.sizeLimit$")
_OPAQUE = {"object", "ResourceQuantity", "IntOrString"}  # int-or-string, quantities, free-form


def make_resolver(*modules: str) -> Resolver:
    """Class lookup by OpenAPI type name over ``modules`` (first hit wins).

    ``K8sIoApiAppsV1DeploymentStrategy`` style names (KServe's aliases of core types) resolve to
    the core class (``V1DeploymentStrategy``).
    """
    mods = [importlib.import_module(m) for m in modules]

    def resolve(name: str) -> Any:
        candidates = [name]
        m = re.match(r"^K8sIoApi[A-Z][a-z]+(V\d\w*)$", name)
        if m:
            candidates.append(m.group(1))
        for cand in candidates:
            for mod in mods:
                cls = getattr(mod, cand, None)
                if cls is not None and hasattr(cls, "openapi_types"):
                    return cls
        return None

    return resolve


def problems(obj: Any, type_name: str, resolve: Resolver, path: str = "", *,
             unresolved: set[str] | None = None) -> list[str]:
    """Every schema violation of ``obj`` (parsed YAML) against OpenAPI type ``type_name``."""
    out: list[str] = []
    where = path or "<root>"
    if obj is None:
        return out
    if type_name in _OPAQUE:
        return out
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        if type_name == "str" and _QUANTITY_PATH.search(path):
            allowed = (str, int, float)  # resource quantities: the SDKs type them str, the API takes numbers
        ok = isinstance(obj, allowed) and not (type_name != "bool" and isinstance(obj, bool))
        if not ok:
            out.append(f"{where}: expected {type_name}, got {type(obj).__name__} {obj!r}")
        return out
    m = re.match(r"^list\[(.+)\]$", type_name)
    if m:
        if not isinstance(obj, list):
            return [f"{where}: expected a list, got {type(obj).__name__}"]
        for i, item in enumerate(obj):
            out += problems(item, m.group(1), resolve, f"{path}[{i}]", unresolved=unresolved)
        return out
    m = re.match(r"^dict\(str, (.+)\)$", type_name)
    if m:
        if not isinstance(obj, dict):
            return [f"{where}: expected a mapping, got {type(obj).__name__}"]
        for k, v in obj.items():
            out += problems(v, m.group(1), resolve, f"{path}.{k}", unresolved=unresolved)
        return out
    cls = resolve(type_name)
    if cls is None:
        if unresolved is not None:
            unresolved.add(f"{where}: {type_name}")
        return out
    if not isinstance(obj, dict):
        return [f"{where}: expected an object ({type_name}), got {type(obj).__name__}"]
    by_json = {j: p for p, j in cls.attribute_map.items()}
    kwargs: dict[str, Any] = {}
    for key, value in obj.items():
        if key not in by_json:
            out.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        attr = by_json[key]
        out += problems(value, cls.openapi_types[attr], resolve, f"{path}.{key}", unresolved=unresolved)
        kwargs[attr] = value
    if not out:
        # The generated constructor enforces required fields (ValueError "must not be None") and
        # enum values where the SDK declares them.
        try:
            cls(**kwargs)
        except (ValueError, TypeError) as exc:
            out.append(f"{where}: {type_name}: {str(exc).splitlines()[0]}")
    return out


def check_documents(docs: list[dict[str, Any]], kinds: dict[str, str], resolve: Resolver) -> list[str]:
    """Problems of every document whose ``kind`` is a key of ``kinds`` (kind -> root type name)."""
    out: list[str] = []
    for doc in docs:
        root = kinds.get(doc.get("kind", ""))
        if root:
            name = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
            out += [f"{name}: {p}" for p in problems(doc, root, resolve)]
    return out


def _main(argv: list[str]) -> int:
    """``k8s_models.py FILE...``: strict check of every PyTorchJob in FILEs (needs kubeflow-training)."""
    import yaml

    resolve = make_resolver("kubeflow.training.models", "kubernetes.client.models")
    docs: list[dict[str, Any]] = []
    for f in argv:
        with open(f) as fh:
            docs += [d for d in yaml.safe_load_all(fh) if d]
    found = sum(1 for d in docs if d.get("kind") == "PyTorchJob")
    errs = check_documents(docs, {"PyTorchJob": "KubeflowOrgV1PyTorchJob"}, resolve)
    for e in errs:
        print(e)
    print(f"checked {found} PyTorchJob(s): {len(errs)} problem(s)")
    return 1 if errs or not found else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
