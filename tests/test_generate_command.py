"""`dvae-jax generate` end to end on a random-init run over a tiny corpus: cold start from the run
directory alone (corpus and cache deleted), priming on the run's test split or on any folder, and
runs of the older layout (no dataset.json): a clear error, `upgrade-run`, or an automatic upgrade."""

import json
import shutil

import jax
import numpy as np
import pytest

from dvae_jax import checkpoint, cli, config, errors, generate_command, models, run_dir
from dvae_jax.data import fixtures, prepare

SMALL_VRNN = config.ModelConfig(model="vrnn", x_dim=20, z_dim=3, dense_x=(6,), dense_z=(4,), dim_rnn=8, num_rnn=1,
                                likelihood="gaussian", learn_x_var=True)


def _old_layout_run(root, cache, workdir):
    """A run as written before dataset.json: config.json and a checkpoint only."""
    data = config.DataConfig(corpus="folder", root=str(root), cache_dir=str(cache),
                             split_by="utterance", val_fraction=0.25, test_fraction=0.25, workers=1)
    cfg = config.Config(name="tiny", model=SMALL_VRNN, features=config.FeatureConfig(kind="mel", n_mels=20), data=data)
    variables = models.init(SMALL_VRNN, jax.random.PRNGKey(0))
    checkpoint.save_config(workdir, cfg)
    ckpts = checkpoint.RunCheckpoints(workdir)
    # checkpoint.save_imported_run would do, but orbax refuses its empty 'train' item (reported)
    ckpts.save("best", 0, variables, {"step": np.zeros((), np.int32)}, {"epoch": 0, "imported": True})
    ckpts.close()
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = fixtures.make_folder(tmp_path_factory.mktemp("corpus"), n_speakers=3, n_utts=3, seconds=1.5)
    workdir = tmp_path_factory.mktemp("run")
    _old_layout_run(root, tmp_path_factory.mktemp("cache"), workdir)
    assert cli.main(["upgrade-run", "--workdir", str(workdir), "--quiet"]) == 0
    return workdir


@pytest.fixture(scope="module")
def other_speech(tmp_path_factory):
    """A folder of speech the run never saw, without transcripts."""
    root = fixtures.make_folder(tmp_path_factory.mktemp("other"), n_speakers=1, n_utts=2, seconds=1.5)
    for f in root.rglob("*.tsv"):
        f.unlink()
    return root


@pytest.mark.parametrize("mode", ["cold", "primed"])
def test_generate_command_writes_audio_figures_and_summary(tiny_run, tmp_path, mode):
    import soundfile as sf

    out = tmp_path / mode
    status = cli.main([
        "generate", "--workdir", str(tiny_run), "--mode", mode, "--seconds", "0.5", "--prime-seconds", "0.3",
        "--n", "2", "--decode", "sample", "--griffin-lim-iters", "4", "--out", str(out), "--no-quality",
    ])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["items"]) == 2
    for item in summary["items"]:
        wave, sr = sf.read(out / item["wav"])
        assert sr == 16000 and np.all(np.isfinite(wave)) and np.max(np.abs(wave)) > 0
        assert (out / item["png"]).exists()
        m = item["measures"]
        assert m["mean_logmel_distance_db"] >= 0 and m["spectral_flux_db"] >= 0
        if mode == "primed":
            assert item["prime_frames"] == round(0.3 * 16000 / 256)
            assert "boundary_continuity" in m and (out / item["resynth_wav"]).exists()
    assert any("dnsmos" in n for n in summary["notes"])  # skipped, with the reason


def test_generate_command_names_bad_input(tiny_run, tmp_path, capsys):
    status = cli.main(["generate", "--workdir", str(tiny_run), "--mode", "primed",
                                    "--utterance", "nope", "--out", str(tmp_path)])
    assert status == 2
    assert "nope" in capsys.readouterr().err
    assert cli.main(["generate", "--workdir", str(tmp_path / "missing")]) == 2


def test_demo_generation_writes_the_report_section(tiny_run, tmp_path):
    from dvae_jax import generate_command, report

    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir)
    res = generate_command.demo_generation(workdir, quiet=True, seconds=0.3, prime_seconds=0.3, cold_seconds=0.3,
                                           quality=False, n_iter=2)
    md = (workdir / "generation" / "summary.md").read_text()
    assert md.startswith("## Generation") and "| primed `primed_00`" in md and "boundary jump" in md
    assert "(primed/primed_00.png)" in md and (workdir / "generation" / "primed" / "primed_00.wav").exists()
    assert res["primed"]["items"][0]["prime_frames"] == round(0.3 * 16000 / 256)
    text = report.write_report(workdir).read_text()
    assert "## Generation" in text and "(generation/cold/cold_00.wav)" in text


# ---------------------------------------------------------------------------------------------
# A self-contained run directory


def _generate(workdir, out, *extra):
    return cli.main(["generate", "--workdir", str(workdir), "--seconds", "0.3", "--prime-seconds", "0.3",
                     "--griffin-lim-iters", "2", "--no-quality", "--no-figures", "--out", str(out), *extra])


def test_trained_run_generates_cold_with_corpus_and_cache_deleted(tmp_path, other_speech, capsys):
    # Given a tiny run trained by `dvae-jax train` on a folder corpus with its own cache
    root = fixtures.make_folder(tmp_path / "corpus", n_speakers=3, n_utts=3, seconds=1.0)
    cache, workdir = tmp_path / "cache", tmp_path / "run"
    cfg = config.Config(
        name="tiny", model=SMALL_VRNN, features=config.FeatureConfig(kind="mel", n_mels=20),
        data=config.DataConfig(corpus="folder", root=str(root), cache_dir=str(cache), split_by="utterance",
                               val_fraction=0.25, test_fraction=0.25, seq_len=16, workers=1),
        train=config.TrainConfig(batch_size=4, epochs=1))
    config.save_json(cfg, str(tmp_path / "tiny.json"))
    assert cli.main(["train", "--config", str(tmp_path / "tiny.json"), "--workdir", str(workdir), "--quiet",
                     "--no-report"]) == 0
    stored = run_dir.load(workdir)
    ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
    np.testing.assert_array_equal(stored.normalizer.mean, ds.stats.mean)
    np.testing.assert_array_equal(stored.normalizer.std, ds.stats.std)
    assert stored.fingerprint["hash"] == ds.path.name and stored.fingerprint["utterances"]["train"] >= 1
    # When the corpus and its cache are deleted
    shutil.rmtree(root)
    shutil.rmtree(cache)
    capsys.readouterr()
    # Then cold generation works from the run directory alone, its measures included
    assert _generate(workdir, tmp_path / "cold") == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "cold" / "summary.json").read_text())
    assert summary["items"][0]["measures"]["mean_logmel_distance_db"] >= 0
    assert not cache.exists() and not root.exists()  # nothing was rebuilt
    # priming on the run's own (deleted) corpus is a one-line error naming it ...
    assert _generate(workdir, tmp_path / "p", "--mode", "primed") == 2
    assert str(root) in capsys.readouterr().err
    # ... while any other folder primes it, featurised with the run's statistics
    assert _generate(workdir, tmp_path / "p", "--mode", "primed", "--audio", str(other_speech)) == 0
    item = json.loads((tmp_path / "p" / "summary.json").read_text())["items"][0]
    assert item["split"] == "audio" and item["transcript"] is None and item["prime_frames"] == 19


def test_old_layout_without_its_cache_says_how_to_upgrade(tmp_path, capsys):
    # Given a run of the older layout whose corpus is there but was never prepared
    root = fixtures.make_folder(tmp_path / "corpus", n_speakers=3, n_utts=3, seconds=1.0)
    workdir = tmp_path / "run"
    _old_layout_run(root, tmp_path / "cache", workdir)
    # When generating, then a one-line error names the upgrade
    assert _generate(workdir, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "upgrade-run --workdir" in err and len(err.strip().splitlines()) == 1
    # and after `upgrade-run` it works without the corpus
    assert cli.main(["upgrade-run", "--workdir", str(workdir), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    shutil.rmtree(root)
    shutil.rmtree(tmp_path / "cache")
    assert _generate(workdir, tmp_path / "out") == 0


def test_old_layout_is_upgraded_automatically_when_its_cache_is_there(tmp_path, capsys):
    root = fixtures.make_folder(tmp_path / "corpus", n_speakers=3, n_utts=3, seconds=1.0)
    workdir = tmp_path / "run"
    cfg = _old_layout_run(root, tmp_path / "cache", workdir)
    ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
    assert _generate(workdir, tmp_path / "out") == 0
    assert f"upgraded {workdir}" in capsys.readouterr().out
    np.testing.assert_array_equal(run_dir.load(workdir).normalizer.mean, ds.stats.mean)


def test_audio_options_are_checked(tiny_run, tmp_path, other_speech, capsys):
    assert _generate(tiny_run, tmp_path, "--audio", str(other_speech)) == 2  # cold mode has no prime
    assert "--mode primed" in capsys.readouterr().err
    assert _generate(tiny_run, tmp_path, "--mode", "primed", "--audio", str(other_speech),
                     "--corpus", "vctk") == 2
    assert "not both" in capsys.readouterr().err
    assert _generate(tiny_run, tmp_path, "--mode", "primed", "--audio", str(tmp_path / "nowhere")) == 2
    assert "nowhere" in capsys.readouterr().err


def test_prime_output_real_keeps_the_prime_and_is_recorded(tiny_run, tmp_path):
    # given the same run, seed and prime, once with the real prime frames in the clip
    out = tmp_path / "real"
    args = ["generate", "--workdir", str(tiny_run), "--mode", "primed", "--seconds", "0.3", "--prime-seconds", "0.3",
            "--griffin-lim-iters", "2", "--no-quality", "--no-figures"]
    assert cli.main([*args, "--prime-output", "real", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["prime_output"] == "real"
    # a bad value is one line naming the option
    with pytest.raises(errors.ConfigError, match="--prime-output"):
        generate_command.Request(mode="primed", prime_output="both").check()
