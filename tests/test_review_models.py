"""The review's eight models through what a user runs: presets with the review's parameter counts,
and, for each model, `train` -> `evaluate` -> `generate` cold and primed on a
tiny corpus, from the command line, in STFT power with the review's Itakura-Saito likelihood;
padded evaluation batches are exact for every model."""

import json

import pytest

from dvae_jax import cli, config
from tests import model_checks

# The review's modules' counts, measured by building them from config/speech/cfg_*.ini
COUNTS = {
    "vae_review_speech": 138_273, "dkf_review_speech": 516_641, "storn_review_speech": 870_113,
    "vrnn_review_speech": 480_097, "srnn_review_speech": 884_993,
    "rvae_causal_review_speech": 553_121, "rvae_noncausal_review_speech": 1_026_849,
    "dsae_review_speech": 1_650_241,
}
NEW = ("vae", "dkf", "storn", "rvae_causal", "rvae_noncausal", "dsae")


@pytest.mark.parametrize("preset", sorted(COUNTS))
def test_describe_prints_the_review_modules_parameter_count(preset, capsys):
    assert cli.main(["describe", "--preset", preset]) == 0
    assert f"parameters: {COUNTS[preset]}" in capsys.readouterr().out.splitlines()


def test_every_registered_model_has_a_review_preset():
    assert {config.model_preset(p).model for p in COUNTS} == set(config.MODELS)


@pytest.mark.parametrize("preset", sorted(COUNTS))
def test_padded_batches_are_exact_for_every_model(preset):
    # Given the preset's layout shrunk to 7 bins (every MLP keeps its depth)
    cfg = config.apply_overrides(config.Config(model=config.model_preset(preset)), ["model.x_dim=7"]).model
    model_checks.assert_padding_is_invisible(cfg)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus")


def _tiny(corpus, work, model):
    preset = f"{model}_review_speech"
    return ["train", "--config", "vrnn_review_speech", "--workdir", str(work), "--quiet",
            "--set", f"model.model={config.model_preset(preset).model}",
            *(f"--set=model.{k}={v}" for k, v in _review_keys(preset).items()),
            "--set", f"data.cache_dir={corpus}", "--set", "data.mini_speakers=4", "--set", "data.mini_sentences=4",
            "--set", "data.val_fraction=0.25", "--set", "data.test_fraction=0.25", "--set", "data.seq_len=20",
            "--set", "train.batch_size=8", "--set", "train.epochs=1", "--set", "train.kl_schedule=linear"]


def _review_keys(preset):
    """The preset's keys that differ from the defaults (bidir flags of the two RVAEs)."""
    base = config.ModelConfig(model=config.model_preset(preset).model)
    return {k: str(v).lower() for k, v in vars(config.model_preset(preset)).items()
            if isinstance(v, bool) and v != getattr(base, k)}


@pytest.mark.parametrize("model", NEW)
def test_train_evaluate_generate_from_the_command_line(model, corpus, tmp_path, capsys):
    work = tmp_path / "run"
    # Given a one-epoch run of the model in the review's setting
    assert cli.main(_tiny(corpus, work, model)) == 0, capsys.readouterr().err
    saved = json.loads((work / "config.json").read_text())["model"]
    assert saved["model"] == config.model_preset(f"{model}_review_speech").model
    # When it is evaluated and generates cold and primed
    assert cli.main(["evaluate", "--workdir", str(work), "--n", "2", "--metrics", "lsd", "si_sdr",
                     "--no-quality", "--quiet"]) == 0, capsys.readouterr().err
    for mode in ("cold", "primed"):
        assert cli.main(["generate", "--workdir", str(work), "--mode", mode, "--seconds", "0.3",
                         "--prime-seconds", "0.3", "--no-quality", "--no-figures", "--griffin-lim-iters", "4",
                         "--out", str(tmp_path / mode)]) == 0, capsys.readouterr().err
    # Then every result is finite and written where the user looks
    results = json.loads((work / "evaluation" / "results.json").read_text())
    lsd = next(v for k, v in results["model"]["aggregate"].items() if k.startswith("lsd"))
    assert lsd["mean"] == lsd["mean"] and lsd["mean"] > 0
    for mode in ("cold", "primed"):
        assert list((tmp_path / mode).rglob("*.wav")), mode
