"""An imported log (``recs extract --events`` with renamed columns and a candidate feature CSV)
feeds all three dataset builders: the import path end to end."""

import numpy as np
import pandas as pd

from startup_recs.data.extract import import_events
from startup_recs.datasets.als import build_als, load_als
from startup_recs.datasets.ranker import build_ranker
from startup_recs.datasets.two_tower import build_two_tower
from startup_recs.features import load_encoders


def test_imported_csv_log_to_three_datasets(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    log = pd.DataFrame({
        "user": [f"u{x}" for x in rng.integers(0, 150, n)],
        "item": [f"i{x}" for x in rng.zipf(1.5, n) % 300],
        "when": (pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.uniform(0, 90, n), unit="D")).strftime(
            "%Y-%m-%dT%H:%M:%S"),
        "kind": rng.choice(["purchase", "view"], n),
        "qty": rng.integers(1, 4, n),
    })
    log.to_csv(tmp_path / "log.csv", index=False)
    pd.DataFrame({"item": [f"i{x}" for x in range(300)], "cat": rng.choice(["a", "b"], 300),
                  "tags": ["x|y" if i % 2 else "y" for i in range(300)]}).to_csv(tmp_path / "items.csv", index=False)
    snap = str(tmp_path / "snap")
    import_events(str(tmp_path / "log.csv"), snap, "startup_developer", entity_col="user", candidate_col="item",
                  time_col="when", event_col="kind", weight_col="qty", candidate_features=str(tmp_path / "items.csv"),
                  event_weights={"purchase": 4.0})

    tt = build_two_tower(snap, "startup_developer", str(tmp_path / "tt.parquet"))
    pairs = pd.read_parquet(tmp_path / "tt.parquet")
    assert tt["source"] == "events" and tt["by_split"]["val"]["pos"] > 0 and "hard" not in tt["by_split"]["train"]
    first = pairs[(pairs.label == 1)].iloc[0]
    ev = log[(log.user == first.entity_id) & (log.item == first.candidate_id)]
    assert first.weight > 0 and len(ev) > 0
    pair = load_encoders(str(tmp_path / "tt_vocab.json"))
    assert pair.entity.spec.empty and pair.candidate.spec.multi == ("tags",) and set(pair.candidate.vocab["tags"]) == {"x", "y"}

    build_als(snap, "startup_developer", str(tmp_path / "als"), fit_window="train")
    m, users, items = load_als(str(tmp_path / "als"), "_reverse")
    assert m.shape == (len(users), len(items)) and m.nnz > 0
    # purchase weighs 4 x qty, a view 1 x qty: the matrix total is the train window's weighted sum
    cut = pd.Timestamp(tt["split"]["val_start"]).tz_convert(None)
    train = log[pd.to_datetime(log.when) < cut]
    expect = (train.qty * np.where(train.kind == "purchase", 4.0, 1.0)).sum()
    assert abs(float(m.sum()) - expect) / expect < 1e-5

    rk = build_ranker(snap, "startup_developer", str(tmp_path / "rk.parquet"))
    rows = pd.read_parquet(tmp_path / "rk.parquet")
    assert rk["propensity_source"].startswith("none") and (rows.position == -1).all()
    # imported logs have no contact/apply events: every non-view event is a positive
    pos = rows[rows.label == 1]
    purchased = set(zip(log.user[log.kind == "purchase"], log.item[log.kind == "purchase"], strict=True))
    assert all(p in purchased for p in zip(pos.entity_id, pos.candidate_id, strict=True))
