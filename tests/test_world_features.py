"""WORLD vocoder frames as a training feature kind (``features.kind=world``): the config and its
checks, the cache key of the other kinds untouched, prepared features and their statistics, the
road back to audio (robust to a model's wild output), figures, and train -> evaluate -> generate
from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pyworld")
import pyworld

from dvae_jax import cli, evaluate, plots, run_dir
from dvae_jax import config as config_lib
from dvae_jax.audio import inversion, stats, world
from dvae_jax.data import corpus, fixtures, prepare

HOP = 256
WORLD_DIO = config_lib.FeatureConfig(kind="world", world_f0_method="dio")  # dio: ~20x faster than harvest


# --------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("sample_rate,f0_floor", [(12000, 71.0), (16000, 71.0), (16000, 150.0), (22050, 71.0),
                                                  (44100, 50.0), (48000, 71.0)])
def test_n_bins_is_what_pyworld_codes(sample_rate, f0_floor):
    # given WORLD settings at several rates, then n_bins (computed without pyworld) is pyworld's width
    feat = config_lib.FeatureConfig(kind="world", sample_rate=sample_rate, fmax=sample_rate / 2,
                                    world_f0_floor=f0_floor, world_env_dims=40)
    assert feat.n_bins == 2 + 40 + pyworld.get_num_aperiodicities(sample_rate)
    assert feat.n_bins == world.from_features(feat).n_dims
    assert config_lib.world_fft_size(sample_rate, f0_floor) == pyworld.get_cheaptrick_fft_size(sample_rate, f0_floor)
    assert config_lib.FeatureConfig(kind="world").n_bins == 63  # the default: 60 + 1 band + 2


@pytest.mark.parametrize("kwargs,message", [
    ({"world_f0_method": "yin"}, "features.world_f0_method=yin: must be one of harvest, dio"),
    ({"world_env_dims": 1}, "features.world_env_dims=1: must be an integer >= 2"),
    ({"world_env_dims": 513}, "features.world_env_dims=513: must be <= 512 (half of CheapTrick's FFT size"),
    ({"world_f0_floor": 0.0}, "features.world_f0_floor=0: must be a finite number > 0"),
    ({"world_f0_floor": 300.0, "world_f0_ceil": 200.0}, "features.world_f0_floor=300: must be < features.world_f0_ceil"),
    ({"sample_rate": 8000, "fmax": 4000.0}, "features.sample_rate=8000: must be >= 12000 for features.kind=world"),
    ({"world_f0_ceil": 8000.0}, "features.world_f0_ceil=8000: must be < half of features.sample_rate (8000)"),
])
def test_bad_world_settings_are_one_line_config_errors(kwargs, message):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.FeatureConfig(kind="world", **kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_world_settings_do_not_constrain_the_other_kinds():
    # the world_* fields are checked with kind=world only (a Mel run never reads them)
    config_lib.FeatureConfig(kind="mel", world_f0_floor=300.0, world_f0_ceil=200.0, world_env_dims=2000)
    with pytest.raises(config_lib.ConfigError):
        config_lib.FeatureConfig(kind="mel", world_f0_method="yin")  # but their type and choices are


def test_world_needs_the_gaussian_likelihood(capsys):
    gaussian = config_lib.ModelConfig(likelihood="gaussian")
    config_lib.Config(model=gaussian, features=WORLD_DIO)
    for likelihood in ("itakura_saito", "bernoulli"):
        with pytest.raises(config_lib.ConfigError, match=f"model.likelihood={likelihood}: must be gaussian with "
                                                          "features.kind=world"):
            config_lib.Config(model=config_lib.ModelConfig(likelihood=likelihood), features=WORLD_DIO)
    # from the command line: the review's IS preset on WORLD frames is one line, status 2
    assert cli.main(["train", "--config", "vrnn_review_speech", "--workdir", "unused",
                     "--set", "features.kind=world"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.likelihood=itakura_saito: must be gaussian" in err and len(err.splitlines()) == 1


def test_world_presets_copy_the_mel160_training_settings():
    for model in ("vrnn", "srnn"):
        w, m = config_lib.load_named(f"{model}_world_speech"), config_lib.load_named(f"{model}_mel160_speech")
        assert w.features.kind == "world" and w.features.world_f0_method == "harvest" and w.features.n_bins == 63
        assert (w.model, w.data, w.train) == (m.model, m.data, m.train)


def test_cache_keys_of_mel_and_stft_runs_are_unchanged_and_world_fields_count_for_world_only():
    # given a fixed file list (paths that do not exist hash as size -1)
    utts = [corpus.Utterance(path=f"/nonexistent/u{i}.wav", speaker=f"s{i % 2}", utt_id=f"u{i}", text="hello")
            for i in range(3)]
    splits = {"train": utts[:1], "val": utts[1:2], "test": utts[2:]}
    data = config_lib.DataConfig()
    key = lambda **kw: prepare.cache_key(splits, data, config_lib.FeatureConfig(**kw))
    # then the keys are those computed before the world_* fields existed (commit eb109d6) ...
    assert key(kind="mel") == "0fb9146355dad6ed"
    assert key(kind="stft") == "5f6ee43ba4e4a082"
    assert key(kind="mel", n_mels=160) == "5ab75c8ad822cdc7"
    # ... a world_* field does not move a Mel key, and moves a WORLD one
    assert key(kind="mel", world_f0_method="dio", world_env_dims=40) == key(kind="mel")
    assert key(kind="world") != key(kind="world", world_f0_method="dio") != key(kind="world", world_env_dims=40)
    assert key(kind="world") != key(kind="mel")


# --------------------------------------------------------------------------------------------
# Prepared features


@pytest.fixture(scope="module")
def world_ds(tmp_path_factory):
    root = fixtures.make_folder(tmp_path_factory.mktemp("corpus"), n_speakers=3, n_utts=4, seconds=2.0)
    data = config_lib.DataConfig(corpus="folder", root=str(root), cache_dir=str(tmp_path_factory.mktemp("cache")),
                                 split_by="utterance", val_fraction=0.25, test_fraction=0.25, workers=1)
    return prepare.prepare_dataset(data, WORLD_DIO, progress=False)


def test_prepare_writes_world_frames_on_the_stft_frame_count(world_ds):
    # given the prepared WORLD corpus, then every split is (frames, 63) with len // hop + 1 frames per
    # utterance, the frames are pyworld's analysis of the stored (trimmed, peak-1) wave
    assert world_ds.n_bins == 63 and world_ds.manifest["n_bins"] == 63
    assert world_ds.manifest["features"]["kind"] == "world"
    for name in ("train", "val", "test"):
        split = world_ds.split(name)
        assert split.features.shape[1] == 63 and len(split) >= 1
        for i in range(len(split)):
            wave = world_ds.load_wave(name, i)
            assert split.lengths[i] == len(wave) // HOP + 1
    wave = world_ds.load_wave("test", 0)
    expected = world.to_array(world.analyse(wave, world.from_features(WORLD_DIO)))
    np.testing.assert_allclose(world_ds.split("test").utterance(0), expected, rtol=1e-5, atol=1e-5)
    # and the speech-like signal (voiced half of the time: a 4 Hz syllable envelope) is voiced at its pitch
    feats = world_ds.split("train").features
    assert 0.3 < np.mean(feats[:, 1]) < 0.8
    assert 100 < np.exp(np.median(feats[feats[:, 1] > 0, 0])) < 170


def test_world_frames_are_normalised_by_training_statistics(world_ds, tmp_path):
    # given the statistics of the training split only, per dimension
    train = np.asarray(world_ds.split("train").features, np.float64)
    assert world_ds.normalizes and run_dir.normalises(world_ds.feature_cfg)
    np.testing.assert_allclose(world_ds.stats.mean, train.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(world_ds.stats.std, np.maximum(train.std(0), 1e-3), rtol=1e-3, atol=1e-4)
    # then the normalised training frames are standardised, and dataset.json keeps the normaliser
    z = world_ds.normalize(train)
    assert np.all(np.abs(z.mean(0)) < 1e-3)
    stored = run_dir.record(tmp_path, world_ds)
    loaded = run_dir.load(tmp_path)
    assert loaded.normalizer.applies and loaded.normalizer.mean.shape == (63,)
    np.testing.assert_array_equal(loaded.normalizer.std, stored.normalizer.std)
    assert loaded.reference_logmel is not None  # the reference-free measures read log-Mel of the waves


# --------------------------------------------------------------------------------------------
# Back to audio


def test_analysed_frames_lie_inside_the_clipping_bounds(world_ds):
    # real features pass to_raw unchanged: the bounds only catch a model's extrapolation
    raw = np.asarray(world_ds.split("train").features)
    lo, hi = inversion.feature_range(world_ds.feature_cfg)
    assert lo.shape == hi.shape == (63,)
    assert np.all(raw >= lo) and np.all(raw <= hi)
    np.testing.assert_array_equal(inversion.to_raw(raw, world_ds.feature_cfg), raw)


def test_the_ceiling_road_gives_back_speech_of_the_right_length(world_ds):
    wave = world_ds.load_wave("test", 0)
    z = world_ds.normalize(world_ds.split("test").utterance(0))
    out = inversion.decoded_to_wave(z, world_ds.feature_cfg, world_ds.denormalize, length=len(wave),
                                    method="griffin_lim_jax", n_iter=1)  # GL options: ignored for WORLD
    assert out.shape == wave.shape and out.dtype == np.float32
    # WORLD resynthesis is not sample-exact, but its log-Mel frames follow the original's closely,
    # far closer than noise of the same level does
    logmel = lambda x: stats.logmel(x, world_ds.feature_cfg)
    close = np.mean(np.abs(logmel(out) - logmel(wave)))
    noise = np.random.default_rng(0).standard_normal(len(wave)).astype(np.float32) * np.std(wave)
    assert close < 1.5 and close < 0.5 * np.mean(np.abs(logmel(noise) - logmel(wave)))


def test_wild_model_output_synthesises_or_fails_in_one_line(world_ds):
    # given normalised frames with NaN, +-inf and absurd values, as a diverged model may emit
    feat = world_ds.feature_cfg
    z = world_ds.normalize(world_ds.split("test").utterance(0)).copy()
    z[2:6] = np.nan
    z[10:14] = np.inf
    z[14:18] = -np.inf
    z[20:40] = 1e30
    z[40:60] = -1e30
    z[60:70, 2:20] = 50.0 * np.sign(np.random.default_rng(0).standard_normal((10, 18)))
    # when filled (generate's road) it synthesises a finite wave of the asked length
    out = inversion.decoded_to_wave(z, feat, world_ds.denormalize, fill_nonfinite=True, length=9000)
    assert out.shape == (9000,) and np.all(np.isfinite(out))
    # and the wild frames are clipped to the power bound, not a float overflow
    assert np.max(np.abs(out)) < 1e3
    # when not filled (evaluate's road) the non-finite values are one clear error
    with pytest.raises(inversion.InversionError, match="non-finite") as info:
        inversion.decoded_to_wave(z, feat, world_ds.denormalize)
    assert "\n" not in str(info.value)
    # and a wrong width is named too
    with pytest.raises(inversion.InversionError, match=r"\(frames, 63\)"):
        inversion.decoded_to_wave(np.zeros((5, 80), np.float32), feat)
    # and evaluation's road turns the NaN prediction into a reason, not a crash
    wave = world_ds.load_wave("test", 0)
    model, ceiling = evaluate.to_waves([z, world_ds.normalize(world_ds.split("test").utterance(0))], feat, wave,
                                       evaluate._method(feat, None), denormalize=world_ds.denormalize)
    assert isinstance(model, str) and "non-finite" in model
    assert ceiling.shape == wave.shape


def test_world_inversion_is_described_and_ignores_griffin_lim_options():
    assert evaluate._method(WORLD_DIO, None) == evaluate._method(WORLD_DIO, "phase") == "world"
    with pytest.raises(evaluate.EvaluationError):
        evaluate._method(WORLD_DIO, "vocos")
    text = evaluate.describe_inversion(WORLD_DIO, "world", "nnls", 64)
    assert text.startswith("WORLD synthesis") and "ignored" in text
    with pytest.raises(inversion.InversionError, match="no STFT magnitude"):
        inversion.features_to_magnitude(np.zeros((4, 63), np.float32), WORLD_DIO)


def test_figures_of_world_frames_are_z_scored_and_labelled(tmp_path):
    # given raw WORLD frames with a NaN, when drawn, then a PNG is written and the image is per-dim z-scores
    rng = np.random.default_rng(0)
    raw = np.concatenate([np.full((50, 1), 5.0), rng.integers(0, 2, (50, 1)), rng.normal(-10, 3, (50, 61))], 1)
    raw[3, 5] = np.nan
    img = plots.feature_image(raw, "world")
    assert img.shape == raw.shape and np.all(np.isfinite(img)) and np.all(np.abs(img) <= 4)
    assert np.all(np.abs(img[:, 2:].mean(0)) < 0.2) and np.all(img[:, 0] == 0)  # a constant dim is 0
    path = plots.generation_spectrogram(tmp_path / "g.png", raw, WORLD_DIO, 20, "world")
    assert path.stat().st_size > 1000
    assert plots.feature_ylabel("world").startswith("WORLD dim")
    assert plots.world_layout(WORLD_DIO) == "dims 0 log-F0, 1 voicing, 2-61 envelope, 62 aperiodicity"
    assert plots.world_layout(config_lib.FeatureConfig(kind="world", sample_rate=44100, fmax=22050.0)).endswith(
        "62-66 aperiodicity")


# --------------------------------------------------------------------------------------------
# The command line, end to end


@pytest.mark.slow
def test_train_evaluate_generate_on_world_features(tmp_path, capsys):
    # given a folder of speech-like audio and the Mel preset switched to WORLD frames
    root = fixtures.make_folder(tmp_path / "corpus", n_speakers=3, n_utts=4, seconds=2.0)
    workdir = tmp_path / "run"
    sets = ["features.kind=world", "features.world_f0_method=dio", "train.epochs=1", "train.max_steps=2",
            "data.corpus=folder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.split_by=utterance", "data.val_fraction=0.25", "data.test_fraction=0.25", "data.workers=1",
            "train.batch_size=4", "data.seq_len=20"]
    args = ["train", "--config", "vrnn_mel_gaussian", "--workdir", str(workdir), "--quiet"]
    for s in sets:
        args += ["--set", s]
    # when trained for 2 steps, then it exits 0 and its reconstructions are WORLD audio of the right length
    assert cli.main(args) == 0, capsys.readouterr().err
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["features"]["kind"] == "world" and cfg["model"]["x_dim"] == 63
    assert run_dir.load(workdir).normalizer.mean.shape == (63,)
    for item in json.loads((workdir / "reconstructions" / "index.json").read_text()):
        n = sf.info(workdir / item["original"]).frames
        assert n > 16000
        for name in ("inverted_original", "reconstruction"):
            assert sf.info(workdir / item[name]).frames == n
    assert "WORLD synthesis" in (workdir / "report.md").read_text()
    # when evaluated on 2 test utterances, then both rows are scored through WORLD synthesis
    assert cli.main(["evaluate", "--workdir", str(workdir), "--n", "2", "--no-quality", "--quiet"]) == 0, \
        capsys.readouterr().err
    res = json.loads((workdir / "evaluation" / "results.json").read_text())
    assert res["settings"]["inversion"] == "world" and res["settings"]["n_bins"] == 63
    assert res["settings"]["inversion_description"].startswith("WORLD synthesis")
    assert len(res["utterances"]) == 2
    for utt in res["utterances"]:
        assert utt["frames"] == utt["samples"] // HOP + 1
        assert all(v is not None for v in utt["metrics"]["ceiling"].values()), utt["reasons"]
        assert all(v is not None for v in utt["metrics"]["model"].values()), utt["reasons"]
    # when primed generation runs, then the wav holds prime + continuation frames of WORLD audio
    out = tmp_path / "gen"
    assert cli.main(["generate", "--workdir", str(workdir), "--mode", "primed", "--n", "1", "--seconds", "0.5",
                     "--no-quality", "--no-figures", "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    frames = round(1.0 * 16000 / HOP) + round(0.5 * 16000 / HOP)  # the default 1 s prime, then 0.5 s
    assert summary["items"][0]["frames"] == frames and summary["settings"]["inversion"].startswith("WORLD")
    wave, sr = sf.read(out / "primed_00.wav")
    assert sr == 16000 and len(wave) == (frames - 1) * HOP and np.all(np.isfinite(wave)) and np.any(wave)
    assert sf.info(out / "primed_00_resynth.wav").frames == (frames - 1) * HOP
    assert np.isfinite(summary["items"][0]["measures"]["spectral_flux_db"])
