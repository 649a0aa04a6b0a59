"""The plain-Python parts under the components: the watermark probe, the gate decision, the
KFP report rendering, parameter parsing. Fast, on tiny hand-made inputs with known answers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest

from startup_recs.core import bundle
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.pipeline import data_steps, evaluate_steps, folders, publish_steps, step, ui_report


def _metrics(routed: float, pop: float) -> dict:
    return {"use_case": "startup_developer", "models": {
        "routed_ranked": {"all": {"ndcg@10": routed, "recall@10": 0.5, "ndcg@20": 0.9}, "warm": {"ndcg@10": 0.1}},
        "popularity": {"all": {"ndcg@10": pop, "recall@10": 0.25}},
    }}


def _eval_dir(tmp_path: Path, metrics: dict, name: str = "eval") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


# --- probe ---------------------------------------------------------------------------------------
def test_probe_reads_the_newest_event_of_an_events_file(tmp_path: Path) -> None:
    f = tmp_path / "log.csv"
    pd.DataFrame({"when": ["2026-01-02T00:00:00Z", "2026-03-04T05:06:07Z", "2025-12-31T00:00:00Z"],
                  "entity_id": ["a", "b", "c"]}).to_csv(f, index=False)
    assert data_steps.probe_source(events_uri=str(f), time_col="when") == "2026-03-04T05:06:07+00:00"


def test_probe_reads_the_newest_event_of_a_database(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'app.db'}"
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("create table startup_interactions (startup_id text, user_id text, event text, ts timestamp)"))
        c.execute(sa.text("insert into startup_interactions values ('s1','u1','view','2026-05-01 10:00:00'),"
                          "('s1','u2','contact','2026-05-03 08:30:00')"))
        c.execute(sa.text("create table user_interactions (user_id text, startup_id text, event text, ts timestamp)"))
        c.execute(sa.text("insert into user_interactions values ('u1','s1','view','2026-05-02 00:00:00')"))
    eng.dispose()
    assert data_steps.probe_source(db_url=url) == "2026-05-03T08:30:00+00:00"


def test_probe_rejects_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one source"):
        data_steps.probe_source()
    with pytest.raises(ConfigError, match="exactly one source"):
        data_steps.probe_source(db_url="sqlite:///x.db", events_uri="x.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        data_steps.probe_source(events_uri=str(tmp_path / "missing.parquet"))
    missing = tmp_path / "missing.db"
    with pytest.raises(ConfigError, match="missing.db does not exist"):
        data_steps.probe_source(db_url=str(missing))
    assert not missing.exists()  # not silently created as an empty database
    empty = tmp_path / "empty.db"
    import sqlalchemy as sa

    sa.create_engine(f"sqlite:///{empty}").connect().close()
    with pytest.raises(DataError, match="no interaction tables"):
        data_steps.probe_source(db_url=f"sqlite:///{empty}")


def test_probe_errors_mask_the_database_password() -> None:
    pytest.importorskip("psycopg")
    url = "postgresql+psycopg://app:s3cret-pw@127.0.0.1:1/app?connect_timeout=2"
    with pytest.raises(ConfigError, match="cannot read") as err:
        data_steps.probe_source(db_url=url)
    assert "s3cret-pw" not in str(err.value) and "app:***@127.0.0.1:1/app" in str(err.value)


# --- gate ----------------------------------------------------------------------------------------
def test_gate_publishes_only_when_popularity_is_beaten(tmp_path: Path) -> None:
    models = str(tmp_path / "models")
    assert publish_steps.gate(str(_eval_dir(tmp_path, _metrics(0.30, 0.20), "good")), models, "startup_developer") == "publish"
    assert publish_steps.gate(str(_eval_dir(tmp_path, _metrics(0.20, 0.20), "tie")), models, "startup_developer") == "skip"


def test_gate_compares_with_the_published_bundle(tmp_path: Path) -> None:
    models = str(tmp_path / "models")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "w.bin").write_bytes(b"x")
    bundle.publish(staging, models, "startup_developer", metrics=_metrics(0.40, 0.10), watermark=None)
    uc = "startup_developer"
    # 0.39 is 2.5 % below 0.40: refused at the default 2 % margin, accepted at 5 %
    ev = str(_eval_dir(tmp_path, _metrics(0.39, 0.10)))
    assert publish_steps.gate(ev, models, uc, margin=0.02) == "skip"
    assert publish_steps.gate(ev, models, uc, margin=0.05) == "publish"
    assert publish_steps.gate(str(_eval_dir(tmp_path, _metrics(0.41, 0.10), "better")), models, uc) == "publish"


def test_gate_refuses_metrics_without_the_headline(tmp_path: Path) -> None:
    ev = _eval_dir(tmp_path, {"models": {"popularity": {"all": {"ndcg@10": 0.1}}}})
    assert publish_steps.gate(str(ev), str(tmp_path / "m"), "startup_investor") == "skip"
    with pytest.raises(ConfigError, match="unknown use case"):
        publish_steps.gate(str(ev), str(tmp_path / "m"), "startup_cat")


# --- reports for the KFP UI ---------------------------------------------------------------------
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_headline_metrics_are_the_overall_at_10_numbers() -> None:
    assert evaluate_steps.headline_metrics(_metrics(0.3, 0.2)) == {
        "routed_ranked-ndcg@10": 0.3, "routed_ranked-recall@10": 0.5,
        "popularity-ndcg@10": 0.2, "popularity-recall@10": 0.25}


def test_report_embeds_plots_so_the_ui_needs_no_download(tmp_path: Path) -> None:
    (tmp_path / "ndcg_at_10.png").write_bytes(PNG)
    (tmp_path / "extra.png").write_bytes(PNG)
    md = ui_report.embed_plots_markdown("# r\n![ndcg](ndcg_at_10.png)\n", tmp_path)
    data = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert f"![ndcg]({data})" in md and "ndcg_at_10.png)" not in md
    assert f"![extra]({data})" in md  # a plot the text never linked is appended
    html = ui_report.render_html(_metrics(0.3, 0.2), tmp_path)
    assert html.count(f"src='{data}'") == 2
    assert "<h3>segment: all</h3>" in html and "<td>routed_ranked</td>" in html and "<td>0.3000</td>" in html


def test_log_metrics_logs_floats_and_writes_the_artifact_file(tmp_path: Path) -> None:
    class FakeMetrics:  # the duck type of kfp's dsl.Metrics: log_metric + path
        def __init__(self) -> None:
            self.logged: dict[str, float] = {}
            self.path = str(tmp_path / "sub" / "metrics")

        def log_metric(self, k: str, v: float) -> None:
            self.logged[k] = v

    m = FakeMetrics()
    step.log_metrics(m, {"ndcg@10": 0.25, "epochs": 3, "flag": True, "name": "x"})
    assert m.logged == {"ndcg@10": 0.25, "epochs": 3.0}
    assert json.loads(Path(m.path).read_text()) == m.logged


def test_dir_digest_changes_with_content(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"1")
    d1 = folders.dir_digest(tmp_path)
    assert d1 == folders.dir_digest(tmp_path) and len(d1) == 12
    (tmp_path / "a.bin").write_bytes(b"2")
    assert folders.dir_digest(tmp_path) != d1


# --- CLI parameter parsing (kfp imported) --------------------------------------------------------
def test_params_are_typed_from_the_pipeline_signature() -> None:
    pytest.importorskip("kfp")
    from pipelines.submit import cron6, parse_params

    p = parse_params(["tt_epochs=7", "tt-lr=0.01", "use_cases=startup_developer,startup_investor",
                      "split_at=2026-06-01", "gate_margin=0"])
    assert p == {"tt_epochs": 7, "tt_lr": 0.01, "use_cases": ["startup_developer", "startup_investor"],
                 "split_at": "2026-06-01", "gate_margin": 0.0}
    assert parse_params(['use_cases=["startup_investor"]']) == {"use_cases": ["startup_investor"]}
    assert cron6("0 3 * * *") == "0 0 3 * * *" and cron6("0 0 3 * * *") == "0 0 3 * * *"
    with pytest.raises(ConfigError, match="unknown pipeline parameter 'epochs'"):
        parse_params(["epochs=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_params(["tt_epochs"])
