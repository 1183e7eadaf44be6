"""The `dvae-jax` command as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dvae_jax import cli
from dvae_jax import config as config_lib

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dvae_jax.cli", *args], capture_output=True, text=True, check=False,
                          cwd=cwd or ROOT, timeout=600)


@pytest.mark.parametrize("preset,count", [("vrnn_review_speech", 480097), ("srnn_review_speech", 884993)])
def test_describe_prints_the_reviews_parameter_counts(preset, count, capsys):
    assert cli.main(["describe", "--preset", preset]) == 0
    out = capsys.readouterr().out
    assert f"parameters: {count}" in out.splitlines()
    assert "rnn" in out


def test_unknown_config_key_is_a_clear_error_with_close_matches(capsys):
    assert cli.main(["describe", "--preset", "vrnn_review_speech", "--set", "model.z_dm=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'model.z_dm'" in err and "model.z_dim" in err


def test_unknown_config_name_lists_the_known_ones(capsys):
    assert cli.main(["train", "--config", "vrnn_mell", "--workdir", "/tmp/never"]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'vrnn_mell'" in err and "vrnn_mel_gaussian" in err


def test_every_shipped_config_loads():
    names = config_lib.available_configs()
    assert {"demo", "vrnn_review_speech", "srnn_review_speech", "vrnn_mel_gaussian", "srnn_stft_student_t"} <= set(names)
    for name in names:
        config_lib.load_named(name)


def test_review_training_preset_is_the_reviews():
    cfg = config_lib.load_named("vrnn_review_speech")
    t = cfg.train
    assert (t.lr, t.batch_size, t.epochs, t.early_stop_patience, t.kl_schedule, t.clip_grad_norm, t.lr_schedule) == (
        0.002, 128, 500, 50, "review", 0.0, "constant")
    assert cfg.features.kind == "stft" and cfg.features.window == "sine" and cfg.data.batching == "chunks"
    assert cfg.model == config_lib.model_preset("vrnn_review_speech")


def test_missing_corpus_is_a_clear_error(tmp_path):
    r = run_cli("train", "--config", "vrnn_mel_gaussian", "--workdir", str(tmp_path / "w"),
                "--set", "data.corpus=vctk", "--set", f"data.root={tmp_path / 'nowhere'}")
    assert r.returncode == 2
    assert "nowhere" in r.stderr and "Traceback" not in r.stderr


def test_mel_features_with_itakura_saito_is_refused(tmp_path, capsys):
    rc = cli.main(["train", "--config", "vrnn_mel_gaussian", "--workdir", str(tmp_path / "w"), "--quiet",
                   "--set", "model.likelihood=itakura_saito", "--set", "data.mini_speakers=4",
                   "--set", "data.mini_sentences=3", "--set", f"data.cache_dir={tmp_path}"])
    assert rc == 2
    assert "itakura_saito needs power spectra" in capsys.readouterr().err


@pytest.mark.slow
def test_train_end_to_end_writes_a_report(tmp_path):
    work = tmp_path / "run"
    r = run_cli("train", "--config", "vrnn_stft_gaussian", "--workdir", str(work), "--quiet",
                "--set", f"data.cache_dir={tmp_path}", "--set", "data.mini_speakers=4", "--set", "data.mini_sentences=4",
                "--set", "data.val_fraction=0.25", "--set", "data.test_fraction=0.25",
                "--set", "model.dense_x=64", "--set", "model.dim_rnn=32", "--set", "model.dense_z=16",
                "--set", "train.batch_size=8", "--set", "train.epochs=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "best validation -ELBO per frame" in r.stdout
    report = (work / "report.md").read_text()
    assert "## Training" in report and "## Reconstructions" in report
    index = json.loads((work / "reconstructions" / "index.json").read_text())
    assert all((work / it["reconstruction"]).exists() for it in index)
    cfg = json.loads((work / "config.json").read_text())
    assert cfg["model"]["dense_x"] == [64] and cfg["model"]["x_dim"] == 513


SUB_COMMANDS = ("describe", "prepare", "train", "demo", "evaluate", "generate", "sweep", "report", "upgrade-run",
                "import-review", "export-review", "bench")


def test_every_sub_command_is_registered_from_the_commands_package(capsys):
    # Given the parser cli.py builds from dvae_jax/commands/
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert tuple(sub.choices) == SUB_COMMANDS
    # Then each one answers --help
    for name in SUB_COMMANDS:
        with pytest.raises(SystemExit) as stop:
            cli.main([name, "--help"])
        assert stop.value.code == 0 and f"dvae-jax {name}" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["generate", "--workdir", "nowhere-run", "--audio", "a", "--root", "b"], "not both"),
    (["evaluate", "--workdir", "nowhere-run", "--no-quality"], "not a dvae-jax run directory"),
    (["upgrade-run", "--workdir", "nowhere-run"], "not a dvae-jax run directory"),
])
def test_run_directory_errors_are_one_line(argv, needle, tmp_path, capsys):
    assert cli.main([a.replace("nowhere-run", str(tmp_path / "none")) for a in argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
