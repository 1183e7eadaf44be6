"""Configs check themselves on construction; --set reads values strictly; named configs are found."""

import dataclasses
import importlib
import json
import sys
import typing

import jax
import jax.numpy as jnp
import pytest

from dvae_jax import config as config_lib
from dvae_jax import errors, models, schedules

KIND_OF_HINT = {int: "int", float: "float", bool: "bool", str: "str",
                tuple[int, ...]: "ints", tuple[str, ...]: "strs",
                # None until built: the chosen model's review default (config.MODEL_DEFAULTS)
                tuple[int, ...] | None: "ints"}


@pytest.mark.parametrize("cls", list(config_lib.RULES), ids=lambda c: c.__name__)
def test_every_field_has_a_rule_of_its_type(cls):
    hints = typing.get_type_hints(cls)
    rules = config_lib.RULES[cls]
    sections = set(config_lib.SECTIONS) if cls is config_lib.Config else set()
    assert set(rules) == {f.name for f in dataclasses.fields(cls)} - sections
    for name, rule in rules.items():
        assert rule.kind == KIND_OF_HINT[hints[name]], name


def test_defaults_presets_and_every_shipped_config_are_valid():
    config_lib.Config()
    for preset in config_lib.MODEL_PRESETS:
        config_lib.model_preset(preset)
    names = config_lib.available_configs()
    assert len(names) >= 11
    for name in names:
        assert isinstance(config_lib.load_named(name), config_lib.Config)


@pytest.mark.parametrize("cls,kwargs,message", [
    (config_lib.ModelConfig, {"z_dim": 0}, "model.z_dim=0: must be an integer >= 1"),
    (config_lib.ModelConfig, {"z_dim": 2.5}, "model.z_dim=2.5: must be an integer >= 1"),
    (config_lib.ModelConfig, {"z_dim": True}, "model.z_dim=true: must be an integer >= 1"),
    (config_lib.ModelConfig, {"model": "lstm"}, "model.model=lstm: must be one of vrnn, srnn"),
    (config_lib.ModelConfig, {"dense_x": (8, 0)}, "model.dense_x=[8, 0]: must be a list of integers >= 1"),
    (config_lib.ModelConfig, {"resq": 1}, "model.resq=1: must be true or false"),
    (config_lib.FeatureConfig, {"n_fft": 512}, "features.win_length=1024: must be <= features.n_fft (512)"),
    (config_lib.FeatureConfig, {"fmax": 9000.0}, "features.fmax=9000: must be <= half of features.sample_rate"),
    (config_lib.DataConfig, {"val_fraction": 0.5, "test_fraction": 0.5}, "data.test_fraction=0.5: must be < 1"),
    (config_lib.DataConfig, {"seq_len": 1, "batching": "chunks"}, "data.seq_len=1: must be an integer >= 2"),
    (config_lib.DataConfig, {"speaker_pattern": "(?P<speaker"}, "data.speaker_pattern=(?P<speaker: must be a valid"),
    (config_lib.TrainConfig, {"lr": float("nan")}, "train.lr=nan: must be a finite number > 0"),
    (config_lib.TrainConfig, {"epochs": 3.0}, "train.epochs=3.0: must be an integer >= 1"),
    (config_lib.TrainConfig, {"kl_anneal_epochs": 0.0}, "train.kl_anneal_epochs=0: must be > 0 with"),
    (config_lib.Config, {"model": {"z_dim": 3}}, "model: must be a ModelConfig"),
])
def test_construction_rejects_a_bad_value_in_one_line(cls, kwargs, message):
    with pytest.raises(errors.ConfigError) as info:
        cls(**kwargs)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_replace_checks_too_and_values_are_normalised():
    m = config_lib.ModelConfig(dense_x=[8, 4], nu=3)
    assert m.dense_x == (8, 4) and isinstance(m.nu, float)
    with pytest.raises(errors.ConfigError, match=r"^model\.num_rnn=0:"):
        dataclasses.replace(m, num_rnn=0)
    assert config_lib.DataConfig(speaker_pattern=r"(?P<speaker>p\d+)/").speaker_pattern


def test_mel_band_limits_apply_to_mel_features_only():
    assert config_lib.FeatureConfig(kind="stft", sample_rate=8000).n_bins == 513
    with pytest.raises(errors.ConfigError, match="features.fmax"):
        config_lib.FeatureConfig(kind="mel", sample_rate=8000)


@pytest.mark.parametrize("text,value", [
    ("[64, 32]", (64, 32)), ("(64,32)", (64, 32)), ("64,32", (64, 32)), ("64", (64,)), ("", ()), ("[]", ()),
])
def test_tuples_parse_in_every_written_form(text, value):
    cfg = config_lib.apply_overrides(config_lib.Config(), [f"model.dense_x={text}"])
    assert cfg.model.dense_x == value


def test_scalars_parse_strictly():
    cfg = config_lib.apply_overrides(config_lib.Config(), [
        "train.epochs=1e3", "train.lr= 3e-4 ", "model.resq=True", "train.seed=12345678901234567890",
        "data.speakers=p225, 'p226'", "data.root=/a=b", "name=my run",
    ])
    assert cfg.train.epochs == 1000 and cfg.train.lr == 3e-4 and cfg.model.resq is True
    assert cfg.train.seed == 12345678901234567890  # read as an integer, not through a float
    assert cfg.data.speakers == ("p225", "p226") and cfg.data.root == "/a=b" and cfg.name == "my run"
    for bad in ("train.epochs=2.5", "train.epochs=abc", "train.epochs=inf", "model.resq=1",
                "model.resq=yes", "train.lr=fast", "model.dense_x=[8,x"):
        with pytest.raises(errors.ConfigError, match="must be"):
            config_lib.apply_overrides(config_lib.Config(), [bad])


def test_overrides_are_checked_together_not_one_by_one():
    """Given keys that constrain each other, when both are set, then their order does not matter."""
    sets = ["features.n_fft=512", "features.win_length=512", "features.hop_length=128"]
    for order in (sets, sets[::-1]):
        f = config_lib.apply_overrides(config_lib.Config(), order).features
        assert (f.n_fft, f.win_length, f.hop_length) == (512, 512, 128)
    with pytest.raises(errors.ConfigError, match="features.win_length=1024"):
        config_lib.apply_overrides(config_lib.Config(), ["features.n_fft=512"])


def test_override_with_a_typed_value_and_unknown_keys():
    assert config_lib.override(config_lib.Config(), "model.dense_z", [4]).model.dense_z == (4,)
    for key in ("model.z_dm", "model", "model.z_dim.x", "nothing.z_dim"):
        with pytest.raises(errors.ConfigError, match="unknown config key"):
            config_lib.apply_overrides(config_lib.Config(), [f"{key}=3"])
    with pytest.raises(errors.ConfigError, match="Did you mean: model.z_dim"):
        config_lib.apply_overrides(config_lib.Config(), ["model.z_dm=3"])


def test_named_configs_come_from_the_package_then_the_users_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_lib.config_path("vrnn_mel_gaussian").parent == config_lib.SHIPPED_CONFIGS
    mine = tmp_path / "experiments" / "configs"
    mine.mkdir(parents=True)
    (mine / "mine.json").write_text(json.dumps({"description": "x", "model": {"z_dim": 7}}))
    (mine / "vrnn_mel_gaussian.json").write_text(json.dumps({"model": {"z_dim": 7}}))
    assert config_lib.load_named("mine").model.z_dim == 7
    assert config_lib.load_named("vrnn_mel_gaussian").model.z_dim == 16  # the shipped one first
    assert config_lib.load_named("experiments/configs/mine.json").model.z_dim == 7
    assert "mine" in config_lib.available_configs()


@pytest.mark.parametrize("content,message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"model": 3}', "model: must be a JSON object of keys"),
    ('{"model": {"z_dim": 0}}', "model.z_dim=0: must be an integer >= 1"),
    ('{"train": {"epochs": 2.5}}', "train.epochs=2.5: must be an integer >= 1"),
    ('{"model": {"z_dm": 3}}', "unknown config key 'model.z_dm'"),
])
def test_a_bad_config_file_is_named_in_the_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(errors.ConfigError) as info:
        config_lib.load_named(str(path))
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_missing_file_or_name_is_a_config_error(tmp_path):
    with pytest.raises(errors.ConfigError, match="does not exist"):
        config_lib.load_named(str(tmp_path / "absent.json"))
    with pytest.raises(errors.ConfigError, match="unknown config 'vrnn_mell'.*vrnn_mel_gaussian"):
        config_lib.load_named("vrnn_mell")


def test_schedule_names_are_the_ones_the_schedules_accept():
    assert config_lib.LR_SCHEDULES == schedules.LR_SCHEDULES
    assert config_lib.KL_SCHEDULES == schedules.KL_SCHEDULES
    for name in config_lib.LR_SCHEDULES:
        schedules.learning_rate(config_lib.TrainConfig(lr_schedule=name), 10, 100)
    for name in config_lib.KL_SCHEDULES:
        schedules.kl_weight(config_lib.TrainConfig(kl_schedule=name), 10)


@pytest.mark.parametrize("activation", config_lib.ACTIVATIONS)
def test_every_allowed_activation_runs(activation):
    cfg = config_lib.ModelConfig(x_dim=3, z_dim=2, dense_x=(4,), dense_z=(4,), dim_rnn=4,
                                 activation=activation, likelihood="gaussian")
    variables = models.init(cfg, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 3))
    outputs, _ = models.forward(cfg, variables, x, key=jax.random.PRNGKey(2))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(outputs))


def test_reference_without_torch_says_which_extra_to_install(monkeypatch):
    import dvae_jax
    from dvae_jax import bench

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    monkeypatch.delitem(sys.modules, "dvae_jax.reference_torch", raising=False)
    monkeypatch.delattr(dvae_jax, "reference_torch", raising=False)  # as if never imported
    with pytest.raises(errors.DvaeError, match=r"pip install 'dvae-jax\[torch\]'"):
        importlib.import_module("dvae_jax.reference_torch")
    assert bench._load_reference() is None


def test_keys_shared_by_models_take_the_chosen_models_review_default():
    # Given the default config (VRNN) and keys the review's models read with different defaults
    # When another model is chosen by --set, with or without one of those keys
    storn = config_lib.apply_overrides(config_lib.Config(), ["model.model=storn"]).model
    rvae = config_lib.apply_overrides(config_lib.Config(), ["model.model=rvae", "model.dense_g_z=8"]).model
    dsae = config_lib.ModelConfig(model="dsae")
    # Then each takes its own model's review default unless given
    assert (storn.dense_g_z, storn.dense_z_h, storn.dense_h_x) == ((64, 32), (32, 64), (256,))
    assert (rvae.dense_g_z, rvae.dense_x_gx, rvae.dense_z_h, rvae.dense_h_x) == ((8,), (), (), ())
    assert dsae.dense_x == () and config_lib.ModelConfig().dense_x == (256,)
    # and a saved config reloads to the same values
    assert config_lib.from_dict(config_lib.ModelConfig, config_lib.to_dict(rvae)) == rvae


@pytest.mark.parametrize("model", config_lib.NON_FEEDBACK_MODELS)
def test_scheduled_sampling_is_refused_for_models_that_never_read_a_frame(model):
    with pytest.raises(errors.ConfigError, match=f"train.scheduled_sampling=0.5: must be 0 with model.model={model}"):
        config_lib.apply_overrides(config_lib.Config(), [f"model.model={model}", "train.scheduled_sampling=0.5"])
