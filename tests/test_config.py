from __future__ import annotations

import json

import pytest

from ragtune import ConfigError, RagtuneConfig
from ragtune.config import RETIRED, FeedbackConfig, GateConfig, IndexConfig, ModelConfig, TrainConfig, TrialConfig


def test_defaults_round_trip(tmp_path):
    cfg = RagtuneConfig()
    cfg.save(tmp_path / "c.json")
    assert RagtuneConfig.load(tmp_path / "c.json") == cfg
    assert json.loads((tmp_path / "c.json").read_text())["model"]["name"] == "default"


@pytest.mark.parametrize(
    ("factory", "needle"),
    [
        (lambda: IndexConfig(backend="milvus"), "'milvus'"),
        (lambda: IndexConfig(kind="lsh"), "index"),
        (lambda: ModelConfig(batch_size=0), "batch_size"),
        (lambda: ModelConfig(device="tpu"), "'tpu'"),
        (lambda: TrainConfig(lr=-1.0), "lr"),
        (lambda: TrainConfig(mode="prompt"), "'prompt'"),
        (lambda: TrainConfig(query_interpolation=1.5), "train.query_interpolation.*1.5"),
        (lambda: TrainConfig(query_interpolation=[0.5]), "query_interpolation"),
        (lambda: TrainConfig(memory_weight=-0.1), "train.memory_weight.*-0.1"),
        (lambda: TrainConfig(memory_weight=[0.5]), "memory_weight"),
        (lambda: TrainConfig(lr=0), "train.lr"),
        (lambda: TrialConfig(share=0), r"trial.share must be a number in \(0, 1\]"),
        (lambda: TrialConfig(share=1.5), "trial.share"),
        (lambda: TrialConfig(alpha=0.5), r"trial.alpha must be a number in \(0, 0.5\)"),
        (lambda: TrialConfig(alpha=0), "trial.alpha"),
        (lambda: TrialConfig(min_decided=0), "trial.min_decided"),
        (lambda: TrialConfig(max_searches=True), "trial.max_searches"),
        (lambda: GateConfig(confidence=1.0), "gate.confidence"),
        (lambda: GateConfig(min_queries=0), "gate.min_queries"),
        (lambda: FeedbackConfig(click_noise=1.0), "click_noise.*1.0"),
        (lambda: FeedbackConfig(click_noise="auto"), "'auto'"),
    ],
)
def test_bad_values_name_the_value(factory, needle):
    with pytest.raises(ConfigError, match=needle):
        factory()


def test_config_error_is_value_error():
    with pytest.raises(ValueError):
        ModelConfig(batch_size=-3)


def test_unknown_keys_rejected(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"model": {"nmae": "x"}}))
    with pytest.raises(ConfigError, match="nmae"):
        RagtuneConfig.load(tmp_path / "c.json")
    with pytest.raises(ConfigError, match=r"config file .*c\.json: unknown key"):  # names the file to fix
        RagtuneConfig.load(tmp_path / "c.json")
    (tmp_path / "e.json").write_text(json.dumps({"trial": {"share": 2}}))
    with pytest.raises(ConfigError, match=r"config file .*e\.json: trial\.share must be"):
        RagtuneConfig.load(tmp_path / "e.json")
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RagtuneConfig.load(tmp_path / "d.json")


def test_overrides_validate():
    cfg = RagtuneConfig().with_overrides({"train.epochs": 5})
    assert cfg.train.epochs == 5
    with pytest.raises(ConfigError, match="unknown config key"):
        RagtuneConfig().with_overrides({"train.epoch": 5})
    with pytest.raises(ConfigError, match="epochs"):
        RagtuneConfig().with_overrides({"train.epochs": 0})


def test_learning_rate_by_mode():
    assert TrainConfig().learning_rate("lora") == 5e-4 and TrainConfig().learning_rate("full") == 2e-5
    assert TrainConfig(lr=1e-3).learning_rate("full") == 1e-3


def test_trial_section_round_trips(tmp_path):
    cfg = RagtuneConfig().with_overrides({"trial.share": 1.0, "trial.alpha": 0.01, "trial.min_decided": 5, "trial.max_searches": 50})
    cfg.save(tmp_path / "c.json")
    back = RagtuneConfig.load(tmp_path / "c.json")
    assert back == cfg and back.trial == TrialConfig(share=1.0, alpha=0.01, min_decided=5, max_searches=50)
    assert json.loads((tmp_path / "c.json").read_text())["trial"]["alpha"] == 0.01


def test_retired_keys_of_an_old_config_are_ignored_with_a_warning(tmp_path, caplog):
    """A workspace written by an older ragtune keeps opening: its removed settings are dropped, each named once."""
    old = RagtuneConfig().to_dict()
    old["gate"].update({"metric": "ndcg@10", "margin": 0.0, "folds": 5, "cold_guard": 0.5})
    old["train"].update({"interpolation": [0.5, 1.0], "memory_weights": [0.5], "query_epochs": 60, "loss": "mnrl"})
    old["mining"].update({"skip_above": True, "range_min": 0, "min_heldout": 5})
    old["feedback"].update({"randomize_top": 3, "propensity_clip": 0.1, "propensity_eta": 1.0})
    old["refresh"]["min_pairs"] = 8
    del old["trial"]  # a config from before trials
    (tmp_path / "c.json").write_text(json.dumps(old))
    with caplog.at_level("WARNING", logger="ragtune.config"):
        cfg = RagtuneConfig.load(tmp_path / "c.json")
    assert cfg == RagtuneConfig()
    text = caplog.text
    for name in ("cold_guard", "folds", "margin", "metric", "interpolation", "memory_weights", "query_epochs", "loss", "skip_above", "range_min", "min_heldout", "randomize_top", "propensity_clip", "propensity_eta", "min_pairs"):
        assert name in text
    assert "query_interpolation" not in text  # a current key is never reported as retired


def test_retired_keys_are_not_settable_and_typos_still_fail():
    for section, names in RETIRED.items():
        known = set(RagtuneConfig().to_dict()[section])
        assert not names & known, f"{section}: {sorted(names & known)} are both retired and current"
        for name in names:
            with pytest.raises(ConfigError, match="unknown config key"):
                RagtuneConfig().with_overrides({f"{section}.{name}": 1})
    with pytest.raises(ConfigError, match="'marginn'"):
        RagtuneConfig.from_dict({"gate": {"marginn": 0.0}})


def test_every_setting_is_documented_and_there_are_at_most_40():
    """The config tree stays small, and each setting is explained in its section's docstring."""
    count = 0
    for name, section in RagtuneConfig().to_dict().items():
        cls = type(getattr(RagtuneConfig(), name))
        doc = cls.__doc__ or ""
        for key in section:
            count += 1
            assert f"        {key}: " in doc, f"{name}.{key} is not documented in {cls.__name__}'s docstring"
    assert 30 <= count <= 40, f"{count} settings"
