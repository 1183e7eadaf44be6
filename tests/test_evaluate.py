"""`dvae-jax evaluate` on a tiny run directory: results.json structure, the ceiling row, the table in
report.md, KL per dimension and active units, both feature kinds, and bad input (NaN predictions,
a silent reference, a length mismatch) flagged rather than crashing the table."""

import json
import math

import jax
import numpy as np
import pytest

from dvae_jax import checkpoint, cli, evaluate, fit, models, report
from dvae_jax import config as config_lib
from dvae_jax.audio import metrics as metrics_lib
from dvae_jax.data import prepare

SI_SDR = metrics_lib.metric_name("si_sdr")
FAST = ["si_sdr", "rmse_ls", "lsd"]  # the bad-input tests need no PESQ / STOI, nor Griffin-Lim


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one mini corpus for both feature kinds


def _save_random_run(workdir, cfg):
    # checkpoint.save_imported_run would do, but orbax refuses its empty 'train' item (reported)
    checkpoint.save_config(workdir, cfg)
    ck = checkpoint.RunCheckpoints(workdir)
    try:
        ck.save("best", 0, models.init(cfg.model, jax.random.PRNGKey(1)), {"step": np.zeros((), np.int32)},
                {"epoch": 0, "imported": True})
    finally:
        ck.close()


def _run(tmp_path_factory, cache, kind: str):
    cfg = config_lib.Config(
        model=config_lib.ModelConfig(model="vrnn", z_dim=4, dense_x=(32,), dense_z=(16,), dim_rnn=32,
                                     likelihood="gaussian" if kind == "mel" else "itakura_saito"),
        features=config_lib.FeatureConfig(kind=kind, n_mels=20),
        data=config_lib.DataConfig(corpus="mini", cache_dir=str(cache), mini_speakers=4, mini_sentences=5,
                                   seq_len=20, val_fraction=0.25, test_fraction=0.25),
    )
    ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
    cfg = fit.resolve_model(cfg, ds.n_bins)
    workdir = tmp_path_factory.mktemp(f"run_{kind}")
    _save_random_run(workdir, cfg)
    return workdir, ds


@pytest.fixture(scope="module")
def mel_run(tmp_path_factory, cache):
    return _run(tmp_path_factory, cache, "mel")


@pytest.fixture(scope="module")
def mel_results(mel_run):
    workdir = mel_run[0]
    assert cli.main(["evaluate", "--workdir", str(workdir), "--n", "2", "--no-quality", "--quiet"]) == 0
    return json.loads((workdir / "evaluation" / "results.json").read_text())


def test_results_json_has_model_and_ceiling_rows_with_every_metric(mel_results):
    res = mel_results
    assert res["settings"]["n_utterances"] == 2 and len(res["utterances"]) == 2
    assert res["settings"]["inversion"] == "griffin_lim_jax"
    names = [metrics_lib.metric_name(k) for k in metrics_lib.METRICS]
    assert res["settings"]["metric_names"] == names
    for row in ("model", "ceiling"):
        agg = res[row]["aggregate"]
        assert set(names) <= set(agg)
        for stats in agg.values():
            assert set(stats) == {"mean", "median", "ci95_low", "ci95_high", "n", "n_nan"}
            assert stats["n"] + stats["n_nan"] == 2
    # names carry their package and mode
    assert any("pesq package, wide-band" in n for n in names) and any("pystoi, extended=True" in n for n in names)
    for utt in res["utterances"]:
        assert set(utt["metrics"]) == {"model", "ceiling"}  # --no-quality: no 'original' row
    assert res["settings"]["quality"]["dnsmos"].startswith("skipped")
    # a random-weight model is far worse than the inversion ceiling
    assert res["ceiling"]["aggregate"][SI_SDR]["mean"] > res["model"]["aggregate"][SI_SDR]["mean"]


def test_kl_per_dimension_and_active_units(mel_results, mel_run):
    post = mel_results["posterior"]
    kl = np.asarray(post["kl_per_dim"])
    assert kl.shape == (4,) and np.all(np.isfinite(kl)) and np.all(kl >= 0)
    assert post["active_units"] == int((kl > 0.01).sum()) and post["threshold"] == 0.01
    assert post["kl_total"] == pytest.approx(kl.sum())
    assert post["frames"] == sum(u["frames"] for u in mel_results["utterances"])
    assert (mel_run[0] / "evaluation" / "kl_per_dim.png").stat().st_size > 1000


def test_report_shows_the_table_with_the_ceiling_row(mel_results, mel_run):
    text = (mel_run[0] / "report.md").read_text()
    assert "## Evaluation" in text and "| ceiling (original features, same inversion) |" in text
    assert "pesq_wb (pesq package, wide-band, 16 kHz)" in text
    assert "Active latent units" in text and "](evaluation/kl_per_dim.png)" in text


def test_stft_ceiling_with_the_original_phase_is_near_perfect(tmp_path_factory, cache):
    workdir, ds = _run(tmp_path_factory, cache, "stft")
    res = evaluate.evaluate_run(workdir, n=2, quality=False, metrics=["si_sdr", "lsd", "spectral_rmse"],
                                dataset=ds, write_report=False)
    assert res["settings"]["inversion"] == "phase"
    assert res["ceiling"]["aggregate"][SI_SDR]["mean"] > 30
    assert res["ceiling"]["aggregate"][metrics_lib.metric_name("lsd")]["mean"] < 1.0
    assert res["model"]["aggregate"][SI_SDR]["n"] == 2


def test_nan_predictions_are_flagged_not_a_crash(mel_run, monkeypatch):
    workdir, ds = mel_run
    real = evaluate.run_model

    def nan_first(*args, **kwargs):
        feats, kl, frames = real(*args, **kwargs)
        feats[0] = np.full_like(feats[0], np.nan)
        kl[0] = np.full_like(kl[0], np.nan)
        return feats, kl, frames

    monkeypatch.setattr(evaluate, "run_model", nan_first)
    res = evaluate.evaluate_run(workdir, n=2, quality=False, metrics=FAST, inversion_name="phase", dataset=ds,
                                write_report=False)
    agg = res["model"]["aggregate"][SI_SDR]
    assert agg["n_nan"] == 1 and agg["n"] == 1 and math.isfinite(agg["mean"])
    assert res["ceiling"]["aggregate"][SI_SDR]["n_nan"] == 0
    assert "non-finite" in res["utterances"][0]["reasons"]["model"][SI_SDR]
    assert res["posterior"]["excluded_utterances"] == 1 and np.all(np.isfinite(res["posterior"]["kl_per_dim"]))
    md = (workdir / "evaluation" / "results.md").read_text()
    assert "NaN values and their reasons" in md and "non-finite" in md
    saved = json.loads((workdir / "evaluation" / "results.json").read_text())
    assert saved["utterances"][0]["metrics"]["model"][SI_SDR] is None  # NaN -> null, valid JSON


def test_silent_reference_is_flagged(mel_run, monkeypatch):
    workdir, ds = mel_run
    real = ds.load_wave
    monkeypatch.setattr(ds, "load_wave", lambda split, i: np.zeros_like(real(split, i)))
    res = evaluate.evaluate_run(workdir, n=2, quality=False, metrics=FAST, inversion_name="phase", dataset=ds,
                                write_report=False)
    for row in ("model", "ceiling"):
        assert res[row]["aggregate"][SI_SDR]["n_nan"] == 2
    assert "silent" in res["utterances"][0]["reasons"]["ceiling"][SI_SDR]


def test_length_mismatch_is_flagged(mel_run, monkeypatch):
    workdir, ds = mel_run
    real = evaluate.run_model

    def short_first(*args, **kwargs):
        feats, kl, frames = real(*args, **kwargs)
        feats[0] = feats[0][:-5]
        return feats, kl, frames

    monkeypatch.setattr(evaluate, "run_model", short_first)
    res = evaluate.evaluate_run(workdir, n=2, quality=False, metrics=FAST, inversion_name="phase", dataset=ds,
                                write_report=False)
    assert res["model"]["aggregate"][SI_SDR]["n_nan"] == 1
    assert "length mismatch" in res["utterances"][0]["reasons"]["model"][SI_SDR]
    assert "length mismatch" in report.results_markdown(res)


def test_select_spreads_over_the_split():
    assert evaluate.select(10, 3) == [0, 4, 9]
    assert evaluate.select(4, 0) == [0, 1, 2, 3] and evaluate.select(4, 10) == [0, 1, 2, 3]


def test_user_errors_are_clear(mel_run, tmp_path, capsys):
    workdir, ds = mel_run
    assert cli.main(["evaluate", "--workdir", str(tmp_path / "none"), "--no-quality"]) == 2
    assert "not a dvae-jax run directory" in capsys.readouterr().err
    with pytest.raises(evaluate.EvaluationError, match="unknown metric"):
        evaluate.evaluate_run(workdir, metrics=["pesq_xx"], dataset=ds, quality=False)


def test_evaluate_any_folder_with_the_runs_own_statistics(mel_run, tmp_path):
    import shutil

    from dvae_jax import run_dir
    from dvae_jax.data import fixtures

    # Given a copy of the run whose stored statistics are deliberately not those of any corpus
    workdir = tmp_path / "run"
    shutil.copytree(mel_run[0], workdir)
    stored = run_dir.record(workdir, mel_run[1])
    shifted = run_dir.Normalizer(stored.normalizer.mean + 1.0, stored.normalizer.std * 2.0)
    run_dir.save(workdir, run_dir.RunData(shifted, stored.fingerprint, stored.reference_logmel))
    folder = fixtures.make_folder(tmp_path / "other", n_speakers=1, n_utts=3, seconds=1.0)
    # When evaluating on that folder
    assert cli.main(["evaluate", "--workdir", str(workdir), "--audio", str(folder), "--n", "2", "--no-quality",
                     "--quiet", "--metrics", "si_sdr", "--inversion", "phase"]) == 0
    # Then two of its three files were featurised with the run's settings and statistics
    res = json.loads((workdir / "evaluation" / "results.json").read_text())
    s = res["settings"]
    assert (s["n_utterances"], s["n_split"], s["split"]) == (2, 3, "audio") and str(folder) in s["source"]
    cfg = checkpoint.load_config(workdir)
    sel = evaluate.select_utterances(workdir, cfg, "test", 2, audio=("folder", str(folder)))
    raw = sel.source.split("audio").utterance(0)
    assert raw.shape[1] == cfg.features.n_mels == 20
    np.testing.assert_allclose(sel.source.normalize(raw), (raw - shifted.mean) / shifted.std, rtol=1e-5, atol=1e-5)
    # and the same through --corpus folder --root
    assert cli.main(["evaluate", "--workdir", str(workdir), "--corpus", "folder", "--root", str(folder), "--n", "1",
                     "--no-quality", "--quiet", "--metrics", "si_sdr", "--inversion", "phase"]) == 0
