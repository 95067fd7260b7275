from __future__ import annotations

import json

import pytest

from ragtune import ConfigError, RagtuneConfig
from ragtune.config import FeedbackConfig, IndexConfig, ModelConfig, TrainConfig


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
        (lambda: TrainConfig(interpolation=[0.0]), "interpolation"),
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
