"""Each trainer's config dataclass is the one place its defaults are written: the CLI and the
tuner read them from there, and the literals KFP needs (component and pipeline signatures) must
equal them. A tuned key a trainer does not take is a ConfigError naming it, never dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from startup_recs.core.errors import ConfigError
from startup_recs.train.params import check_params, config_defaults, from_params


@pytest.fixture(scope="module")
def configs() -> dict[str, type]:
    from startup_recs.train.als import ALSConfig
    from startup_recs.train.item2item import Item2ItemConfig
    from startup_recs.train.ranker import RankerTrainConfig
    from startup_recs.train.two_tower import TwoTowerConfig

    return {"two_tower": TwoTowerConfig, "als": ALSConfig, "item2item": Item2ItemConfig,
            "ranker": RankerTrainConfig}


def _gib(budget: int) -> float:
    return budget / 1024**3


# component or pipeline parameter -> (trainer, config field[, conversion to the parameter's unit])
COMPONENT_PARAMS: dict[str, dict[str, tuple]] = {
    "train_two_tower": {"window": ("two_tower", "fit_on"), "epochs": ("two_tower", "epochs"),
                        "batch_size": ("two_tower", "batch_size"), "device": ("two_tower", "device"),
                        "seed": ("two_tower", "seed")},
    "train_two_tower_ddp": {"window": ("two_tower", "fit_on"), "epochs": ("two_tower", "epochs"),
                            "batch_size": ("two_tower", "batch_size"), "device": ("two_tower", "device"),
                            "seed": ("two_tower", "seed")},
    "train_item2item": {"memory_gb": ("item2item", "memory_budget", _gib)},
    "train_als": {"track_loss": ("als", "track_loss")},
    "train_ranker": {"epochs": ("ranker", "epochs"), "batch_size": ("ranker", "batch_size"), "lr": ("ranker", "lr"),
                     "tt_epochs": ("two_tower", "epochs"), "tt_batch_size": ("two_tower", "batch_size"),
                     "device": ("two_tower", "device"), "seed": ("two_tower", "seed"),
                     "memory_gb": ("item2item", "memory_budget", _gib), "windows": ("ranker", "windows")},
    "refit": {"epochs": ("two_tower", "epochs"), "batch_size": ("two_tower", "batch_size"),
              "device": ("two_tower", "device"), "seed": ("two_tower", "seed"),
              "memory_gb": ("item2item", "memory_budget", _gib), "ranker_epochs": ("ranker", "epochs"),
              "ranker_batch_size": ("ranker", "batch_size"), "ranker_lr": ("ranker", "lr"),
              "ranker_windows": ("ranker", "windows")},
}
PIPELINE_PARAMS: dict[str, tuple] = {
    "tt_epochs": ("two_tower", "epochs"), "tt_batch_size": ("two_tower", "batch_size"), "tt_lr": ("two_tower", "lr"),
    "embedding_dim": ("two_tower", "embedding_dim"), "device": ("two_tower", "device"),
    "tt_temperature": ("two_tower", "temperature"), "tt_hard_negatives": ("two_tower", "hard_negatives"),
    "seed": ("two_tower", "seed"),
    "als_factors": ("als", "factors"), "als_iterations": ("als", "iterations"),
    "als_regularization": ("als", "regularization"), "als_alpha": ("als", "alpha"),
    "als_weighting": ("als", "weighting"),
    "i2i_method": ("item2item", "method"), "i2i_lam": ("item2item", "lam"),
    "i2i_neighbours": ("item2item", "neighbours"), "i2i_memory_gb": ("item2item", "memory_budget", _gib),
    "ranker_epochs": ("ranker", "epochs"), "ranker_batch_size": ("ranker", "batch_size"), "ranker_lr": ("ranker", "lr"),
    "ranker_windows": ("ranker", "windows"),
}
TUNE_COMPONENTS = {"tune_als": "als", "tune_item2item": "item2item", "tune_two_tower": "two-tower"}


def _expected(configs: dict[str, type], spec: tuple) -> Any:
    trainer, field, *convert = spec
    value = config_defaults(configs[trainer])[field]
    return convert[0](value) if convert else value


def _inputs(component: Any) -> dict[str, Any]:
    return {name: spec.default for name, spec in (component.component_spec.inputs or {}).items()}


# --- defaults ------------------------------------------------------------------------------------
def test_component_defaults_are_the_trainer_configs(configs: dict[str, type]) -> None:
    pytest.importorskip("kfp")
    import components

    for name, params in COMPONENT_PARAMS.items():
        defaults = _inputs(getattr(components, name))
        for param, spec in params.items():
            assert defaults[param] == _expected(configs, spec), f"{name}.{param}"


def test_tuning_component_defaults_are_the_searches_starting_values() -> None:
    pytest.importorskip("kfp")
    import components
    from startup_recs.tuning.spaces import SEARCH_SPACES, default_params

    for name, model in TUNE_COMPONENTS.items():
        defaults = _inputs(getattr(components, name))
        start = default_params(model)
        assert set(start) == set(SEARCH_SPACES[model]) and set(start) <= set(defaults), name
        assert {k: defaults[k] for k in start} == start, name


def test_pipeline_defaults_are_the_trainer_configs(configs: dict[str, type]) -> None:
    pytest.importorskip("kfp")
    from pipelines.training import reverse_recommendation_training

    defaults = _inputs(reverse_recommendation_training)
    for param, spec in PIPELINE_PARAMS.items():
        assert defaults[param] == _expected(configs, spec), param


def test_search_starts_from_the_trainer_configs(configs: dict[str, type]) -> None:
    from startup_recs.tuning.spaces import MODELS, SEARCH_SPACES, default_params

    for model in MODELS:
        cfg = config_defaults(configs[model.replace("-", "_")])
        start = default_params(model)
        assert list(start) == list(SEARCH_SPACES[model])
        for name, value in start.items():
            if model == "item2item" and name == "method":
                assert (value, cfg[name]) == ("ease", "auto")  # the search's "ease" is the trainer's auto rule
            elif model == "ranker" and name == "hidden":
                assert tuple(int(h) for h in value.split(",")) == cfg[name]
            else:
                assert value == cfg[name], (model, name)


def _train_args(command: str) -> list[str]:
    extra = {"two-tower": [], "ranker": [],
             "als": ["--user-mapping", "u.json", "--item-mapping", "i.json", "--use-case", "startup_developer"],
             "item2item": ["--user-mapping", "u.json", "--item-mapping", "i.json", "--use-case", "startup_developer"]}
    return ["train", command, "--data", "x", *extra[command]]


# same name, other meaning: the use case is an input; ranker --retrievers is the stage-1 models folder
NOT_CONFIG = {"use_case", "retrievers"}


def test_cli_trainer_flags_default_to_the_config_fields(configs: dict[str, type]) -> None:
    from startup_recs.cli import ConfigDefault, build_parser, resolve_defaults

    parser = build_parser()
    flag_field = {"memory_gb": "memory_budget"}
    for command, trainer in (("two-tower", "two_tower"), ("als", "als"), ("ranker", "ranker"),
                             ("item2item", "item2item")):
        raw = vars(parser.parse_args(_train_args(command)))
        fields = config_defaults(configs[trainer])
        placeholders = {dest: v for dest, v in raw.items() if isinstance(v, ConfigDefault)}
        for dest in raw:
            if dest not in NOT_CONFIG and flag_field.get(dest, dest) in fields:  # no literal copy of a default
                assert dest in placeholders, f"recs train {command} --{dest.replace('_', '-')}"
        for dest, placeholder in placeholders.items():
            assert placeholder.field == flag_field.get(dest, dest)
        resolved = vars(resolve_defaults(parser.parse_args(_train_args(command))))
        for dest in placeholders:
            value = fields[flag_field.get(dest, dest)]
            if dest == "memory_gb":
                value = _gib(value)
            elif dest == "hidden":
                value = ",".join(map(str, value))
            assert resolved[dest] == value, (command, dest)
    given = resolve_defaults(parser.parse_args([*_train_args("als"), "--factors", "7"]))
    assert given.factors == 7


def test_cli_parser_imports_no_trainer() -> None:
    code = ("import sys; from startup_recs.cli import build_parser; "
            "build_parser().parse_args(['train', 'two-tower', '--data', 'x']); "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'torch' "
            "or m.startswith('startup_recs.train.')], 'a trainer was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- tuned values --------------------------------------------------------------------------------
def test_unknown_tuned_key_is_a_config_error(configs: dict[str, type]) -> None:
    als = configs["als"]
    with pytest.raises(ConfigError, match="'factor' is not a parameter of ALSConfig"):
        from_params(als, {"factor": 8})
    with pytest.raises(ConfigError, match="'device' is a run setting"):
        check_params(als, {"device": "cuda"}, tunable=("factors",))
    cfg = from_params(als, {"factors": 8}, iterations=3)
    assert (cfg.factors, cfg.iterations, cfg.alpha) == (8, 3, config_defaults(als)["alpha"])


def _params_dir(tmp_path: Path, best: dict[str, Any]) -> str:
    d = tmp_path / "tuned"
    d.mkdir(parents=True)
    (d / "best_params.json").write_text(json.dumps({"model": "x", "best_params": best}))
    return str(d)


def test_train_steps_refuse_unknown_tuned_keys(tmp_path: Path) -> None:
    from startup_recs.pipeline import train_steps

    uc = "startup_developer"
    with pytest.raises(ConfigError, match="'factor'"):
        train_steps.train_als(str(tmp_path), uc, str(tmp_path / "out"), params_dir=_params_dir(tmp_path, {"factor": 8}))
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="'chosen' is a run setting"):
        train_steps.train_item2item(str(tmp_path), uc, str(tmp_path / "out"),
                                    params_dir=_params_dir(tmp_path / "b", {"lam": 10.0, "chosen": "ease"}))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "two_tower_reverse.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match="'embeding_dim'"):
        train_steps.train_two_tower(str(tmp_path / "ds"), uc, str(tmp_path / "out"),
                                    params_dir=_params_dir(tmp_path / "c", {"embeding_dim": 64}))
    with pytest.raises(ConfigError, match="'fit_on' is a run setting"):
        train_steps.train_two_tower(str(tmp_path / "ds"), uc, str(tmp_path / "out"),
                                    params_dir=_params_dir(tmp_path / "d", {"fit_on": "trainval"}))


def test_tuner_refuses_unknown_keys_before_reading_data(tmp_path: Path) -> None:
    from startup_recs.tuning import search

    missing = str(tmp_path / "no-snapshot")
    with pytest.raises(ConfigError, match="'factor' is not searched for als"):
        search.run_single(missing, "startup_developer", "als", {"factor": 8})
    with pytest.raises(ConfigError, match="default 'k' is not searched for item2item"):
        search.tune(missing, "startup_developer", "item2item", str(tmp_path / "out"), trials=1, defaults={"k": 5})
