"""Bundle safety on a real S3-protocol server (moto over HTTP) and locally: containment of keys,
unlisted files never fetched, concurrent publishers, ``latest`` never backwards, an identical
publish reported unchanged, a crash between publish steps, rollback, and a slot that survives
malformed manifests and an unreachable endpoint without raising."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from startup_recs.cli import main as recs
from startup_recs.core import bundle, bundle_ops, storage
from startup_recs.core.bundle_pointer import move_latest
from startup_recs.core.errors import BundleError, StorageError
from startup_recs.serving.reload import BundleSlot, clean_cache, load_bundle

UC = "startup_investor"


def _stage(tmp_path: Path, tag: str) -> Path:
    d = tmp_path / f"stage-{tag}"
    (d / "models").mkdir(parents=True)
    (d / "models" / "w.npy").write_bytes(f"weights-{tag}".encode())
    (d / "model.json").write_text(json.dumps({"tag": tag}))
    return d


def _publish(tmp_path: Path, models: str, tag: str) -> dict:
    return bundle.publish(_stage(tmp_path, tag), models, UC, metrics={}, watermark=None)


def _loader(local_dir: Path) -> str:
    return json.loads((local_dir / "model.json").read_text())["tag"]


def _put(uri: str, data: bytes) -> None:
    bucket, key = storage._split_s3(uri)
    storage.s3_client().put_object(Bucket=bucket, Key=key, Body=data)


@pytest.fixture(params=["s3", "local"])
def models(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return storage.join(request.getfixturevalue("s3_bucket"), "models")
    return str(tmp_path / "models")


def test_dotdot_key_is_refused_and_nothing_lands_outside(s3_bucket: str, tmp_path: Path) -> None:
    prefix = storage.join(s3_bucket, "models", UC, "v1")
    _put(storage.join(prefix, "ok.bin"), b"ok")
    _put(storage.join(prefix, "../../../escaped.bin"), b"evil")  # a literal '..' in the key
    dest = tmp_path / "cache" / "dl"
    with pytest.raises(StorageError, match="refused path"):
        storage.download(prefix, dest)
    assert not list(tmp_path.rglob("escaped.bin"))
    with pytest.raises(StorageError):
        storage.contained(dest, "/etc/passwd")


def test_manifest_listing_dotdot_refuses_the_bundle(models: str, tmp_path: Path) -> None:
    _publish(tmp_path, models, "a")
    man_uri = storage.join(models, UC, "v1", bundle.MANIFEST)
    manifest = storage.read_json(man_uri)
    manifest["files"]["../../outside.bin"] = {"sha256": "0" * 64, "bytes": 1}
    storage.write_json(man_uri, manifest)
    with pytest.raises(BundleError, match="file name"):
        bundle.fetch_verified(storage.join(models, UC), tmp_path / "dl" / "b")
    assert not list(tmp_path.rglob("outside.bin"))


def test_unlisted_files_are_never_fetched_or_loaded(models: str, tmp_path: Path) -> None:
    _publish(tmp_path, models, "a")
    extra = storage.join(models, UC, "v1", "models", "injected.npy")
    storage.write_bytes(extra, b"not in the manifest")
    loaded = load_bundle(storage.join(models, UC), use_case=UC, loader=_loader, cache_root=tmp_path / "cache")
    assert loaded.model == "a"
    assert (loaded.local_dir / "models" / "w.npy").is_file()
    assert not (loaded.local_dir / "models" / "injected.npy").exists()


def test_concurrent_publishes_get_distinct_versions_and_latest_is_the_highest(models: str, tmp_path: Path) -> None:
    out: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run(i: int) -> None:
        try:
            stage = _stage(tmp_path, f"c{i}")
            start.wait()
            out.append(bundle.publish(stage, models, UC, metrics={}, watermark=None))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    got = sorted(m["version"] for m in out)
    assert got == [1, 2, 3, 4]
    assert bundle.read_pointer(models, UC)["version"] == 4
    for v in got:  # every bundle whole: no publisher wrote into another's folder
        bundle.fetch_verified(storage.join(models, UC, f"v{v}"), tmp_path / f"check-{v}")


def test_latest_never_moves_backwards_and_identical_publish_is_unchanged(models: str, tmp_path: Path) -> None:
    _publish(tmp_path, models, "a")
    _publish(tmp_path, models, "b")
    assert move_latest(models, UC, 1) is False
    assert bundle.read_pointer(models, UC)["version"] == 2
    again = bundle.publish(_stage(tmp_path / "again", "b"), models, UC, metrics={}, watermark=None)
    assert again["unchanged"] is True and again["version"] == 2
    assert bundle.versions(models, UC) == [1, 2]


def test_crash_between_publish_steps_leaves_a_readable_state(models: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(tmp_path, models, "a")
    real = storage.upload_file
    calls = {"n": 0}

    def crash_after_first(path, uri):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt("killed mid-upload")
        real(path, uri)

    monkeypatch.setattr(storage, "upload_file", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        _publish(tmp_path, models, "b")
    monkeypatch.setattr(storage, "upload_file", real)
    assert bundle.resolve(storage.join(models, UC)).endswith("/v1")  # latest untouched
    assert _loader(bundle.fetch_verified(storage.join(models, UC), tmp_path / "r1")[0]) == "a"
    m = _publish(tmp_path / "retry", models, "b")
    assert m["version"] == 3 and bundle.resolve(storage.join(models, UC)).endswith("/v3")  # skips half v2


def test_rollback_moves_latest_and_refuses_a_corrupt_target(models: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    for tag in ("a", "b", "c"):
        _publish(tmp_path, models, tag)
    assert recs(["bundle", "rollback", "--models-uri", models, "--use-case", UC, "--to", "v2"]) == 0
    assert bundle.read_pointer(models, UC)["version"] == 2
    storage.write_bytes(storage.join(models, UC, "v1", "models", "w.npy"), b"flipped bytes")
    assert recs(["bundle", "rollback", "--models-uri", models, "--use-case", UC, "--to", "v1"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert bundle.read_pointer(models, UC)["version"] == 2
    assert recs(["bundle", "rollback", "--models-uri", models, "--use-case", UC, "--to", "v9"]) == 2
    assert bundle.read_pointer(models, UC)["version"] == 2


@pytest.mark.parametrize("broken", [
    {"files": ["model.json"], "version": 2},
    {"files": {"model.json": {"sha256": 5}}, "version": 2},
    {"version": "two", "files": {}},
    [1, 2, 3],
])
def test_malformed_manifest_never_escapes_refresh(models: str, tmp_path: Path, broken: object) -> None:
    _publish(tmp_path, models, "a")
    _publish(tmp_path, models, "b")
    storage.write_json(storage.join(models, UC, "v2", bundle.MANIFEST), broken)
    slot = BundleSlot(storage.join(models, UC), UC, loader=_loader, cache_root=tmp_path / "cache")
    slot.refresh()
    assert slot.current is not None and slot.current.model == "a" and slot.fallback
    assert "corrupt manifest" in (slot.last_error or "")


def test_unreachable_endpoint_never_escapes_refresh_and_backs_off(s3_bucket: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    models = storage.join(s3_bucket, "models")
    _publish(tmp_path, models, "a")
    slot = BundleSlot(storage.join(models, UC), UC, loader=_loader, cache_root=tmp_path / "cache",
                      backoff_s=0.2, max_backoff_s=1.0)
    assert slot.refresh() and slot.current.model == "a"
    _publish(tmp_path, models, "b")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: connection refused
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert slot.refresh() is False and slot.current.model == "a"
    assert "StorageError" in (slot.last_error or "") and slot._outages == 1
    assert slot.refresh() is False and slot._outages == 1  # within the backoff: storage not touched
    monkeypatch.undo()
    slot._next_try = 0.0
    assert slot.refresh() and slot.current.model == "b" and slot._outages == 0


def test_stale_download_folders_are_removed_at_start(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "bundle-old1" / "models").mkdir(parents=True)
    (cache / "bundle-old2").mkdir()
    (cache / "keep-me").mkdir()
    assert clean_cache(cache) == 2
    assert sorted(p.name for p in cache.iterdir()) == ["keep-me"]


def test_serving_candidates_skip_versions_above_latest(models: str, tmp_path: Path) -> None:
    for tag in ("a", "b", "c"):
        _publish(tmp_path, models, tag)
    bundle_ops.rollback(models, UC, 2)
    named, cands = bundle_ops.serving_candidates(storage.join(models, UC))
    assert named.endswith("/v2") and [c.rsplit("/", 1)[1] for c in cands] == ["v2", "v1"]


def test_publish_works_after_latest_was_left_pointing_at_nothing(models: str, tmp_path: Path) -> None:
    _publish(tmp_path, models, "a")
    storage.write_json(storage.join(models, UC, "latest"), {"version": 7, "path": "v7", "updated_at": "x"})
    m = _publish(tmp_path, models, "b")
    assert m["version"] == 2
    # latest named v7 (missing): a publish never moves it down; rollback is the explicit way
    assert bundle.read_pointer(models, UC)["version"] == 7
    bundle_ops.rollback(models, UC, 2)
    assert bundle.resolve(storage.join(models, UC)).endswith("/v2")
