"""Every bad value and usage a user can type is one line on stderr and exit status 2, no traceback.

The table is the list of cases: one row per bad input, built by a helper per sub-command. To add a
case, add a row: ``bad(argv, expected)`` takes any command line (``{tmp}`` is replaced by a fresh
temporary folder holding the files of :data:`FILES`) and a fragment the one-line message must hold.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from dvae_jax import cli

ROOT = Path(__file__).resolve().parents[1]

# Files written in {tmp} before each row runs: named in the rows as {tmp}/NAME.
FILES = {
    "broken.json": "{not json",
    "list.json": "[1, 2]",
    "zero_z.json": '{"model": {"z_dim": 0}}',
    "typo.json": '{"model": {"z_dm": 3}}',
    "emptyrun/notes.txt": "a folder that is not a run",
    "badrun/config.json": "{not json",
    "not_a_checkpoint.pt": "plain text, not a PyTorch file",
}


def bad(argv: list[str], expected: str, id: str | None = None):
    """One row: a command line and a fragment of the error line it must print."""
    return pytest.param(argv, expected, id=id or " ".join(argv))


def describe(*assignments: str, expected: str | None = None):
    """``describe --config vrnn_mel_gaussian --set KEY=VALUE ...``; by default the message names
    the first key and its value as typed."""
    argv = ["describe", "--config", "vrnn_mel_gaussian"]
    for a in assignments:
        argv += ["--set", a]
    return bad(argv, expected or f"{assignments[0]}: must be", id="describe " + " ".join(assignments))


def train(*assignments: str, expected: str | None = None):
    """``train --config vrnn_mel_gaussian --workdir {tmp}/run --set ...``: refused before any work
    (the test also checks that the run folder was not created)."""
    argv = ["train", "--config", "vrnn_mel_gaussian", "--workdir", "{tmp}/run", "--quiet"]
    for a in assignments:
        argv += ["--set", a]
    return bad(argv, expected or f"{assignments[0]}: must be", id="train " + " ".join(assignments))


BAD = [
    # ---- model
    describe("model.model=lstm", expected="model.model=lstm: must be one of vrnn, srnn"),
    describe("model.x_dim=0"),
    describe("model.z_dim=0", expected="model.z_dim=0: must be an integer >= 1"),
    describe("model.z_dim=-3"),
    describe("model.z_dim=abc", expected="model.z_dim=abc: must be an integer >= 1"),
    describe("model.z_dim=2.5"),
    describe("model.z_dim=", expected="model.z_dim='': must be an integer >= 1"),
    describe("model.z_dim=1e400"),
    describe("model.activation=sigmoid", expected="must be one of tanh, relu, gelu, silu"),
    describe("model.dropout_p=1", expected="model.dropout_p=1: must be a number in [0, 1)"),
    describe("model.dropout_p=-0.1", expected="model.dropout_p=-0.1: must be a number in [0, 1)"),
    describe("model.dense_x=256,0", expected="model.dense_x=[256, 0]: must be a list of integers >= 1"),
    describe("model.dense_x=[256,x"),
    describe("model.dense_z=1.5"),
    describe("model.dense_hz_x=-4", expected="model.dense_hz_x=[-4]: must be a list"),
    describe("model.dim_rnn=0"),
    describe("model.num_rnn=0"),
    describe("model.dim_rnn_g=0"),
    describe("model.resq=yes", expected="model.resq=yes: must be true or false"),
    describe("model.resq=1"),
    describe("model.rnn_cell=rnn", expected="model.rnn_cell=rnn: must be one of lstm, gru"),
    describe("model.separate_heads=2", expected="model.separate_heads=2: must be true or false"),
    describe("model.share_x_embedding=maybe"),
    describe("model.prior=laplace", expected="must be one of gaussian, student_t"),
    describe("model.nu=0", expected="model.nu=0: must be a finite number > 0"),
    describe("model.nu=-1", expected="model.nu=-1: must be a finite number > 0"),
    describe("model.nu=inf", expected="model.nu=inf: must be a finite number > 0"),
    describe("model.kl_estimator=exact", expected="must be one of mc, entropy"),
    describe("model.likelihood=poisson", expected="must be one of itakura_saito, gaussian"),
    describe("model.learn_x_var=maybe"),
    describe("model.learn_nu=0"),
    describe("model.fixed_x_logvar=nan", expected="model.fixed_x_logvar=nan: must be a finite number"),
    describe("model.logvar_clip=0", expected="model.logvar_clip=0: must be a finite number > 0"),
    describe("model.unroll=0"),
    # ---- features
    describe("features.kind=mfcc", expected="must be one of mel, stft"),
    describe("features.sample_rate=0", expected="features.sample_rate=0: must be an integer in [1, 384000]"),
    describe("features.sample_rate=16000.5"),
    describe("features.sample_rate=1000000"),
    describe("features.n_fft=0"),
    describe("features.n_fft=512", expected="features.win_length=1024: must be <= features.n_fft (512)"),
    describe("features.win_length=0"),
    describe("features.hop_length=0"),
    describe("features.hop_length=2048",
             expected="features.hop_length=2048: must be <= features.win_length (1024)"),
    describe("features.window=hamming", expected="must be one of sine, hann"),
    describe("features.n_mels=0"),
    describe("features.fmin=-1"),
    describe("features.fmax=0"),
    describe("features.fmax=9000", expected="features.fmax=9000: must be <= half of features.sample_rate"),
    describe("features.fmin=8000", expected="features.fmin=8000: must be < features.fmax (8000)"),
    describe("features.sample_rate=8000", expected="features.fmax=8000: must be <= half of"),
    describe("features.trim_db=-5"),
    describe("features.log_floor=0"),
    describe("features.power_floor=-1"),
    describe("features.normalize=on"),
    # ---- data
    describe("data.corpus=librispeech", expected="must be one of mini, vctk, folder, tfds"),
    describe("data.n_speakers=-1"),
    describe("data.n_speakers=2.5"),
    describe("data.utts_per_speaker=-1"),
    describe("data.split_by=gender", expected="must be one of speaker, utterance"),
    describe("data.val_fraction=1", expected="data.val_fraction=1: must be a number in [0, 1)"),
    describe("data.val_fraction=-0.1"),
    describe("data.test_fraction=1.5"),
    describe("data.val_fraction=nan"),
    describe("data.val_fraction=0.5", "data.test_fraction=0.5",
             expected="data.test_fraction=0.5: must be < 1 - data.val_fraction (0.5)"),
    describe("data.seed=-1"),
    describe("data.seq_len=0"),
    describe("data.seq_len=1", "data.batching=chunks",
             expected="data.seq_len=1: must be an integer >= 2 with data.batching=chunks"),
    describe("data.batching=random", expected="must be one of crops, chunks"),
    describe("data.mic=mic3", expected="must be one of mic1, mic2"),
    describe("data.speaker_pattern=(", expected="data.speaker_pattern=(: must be a valid regular expression"),
    describe("data.speaker_pattern=(?P<speaker>p[0-9+"),
    describe("data.mini_speakers=0"),
    describe("data.mini_sentences=0"),
    describe("data.workers=-2"),
    describe("data.require_text=yes"),
    describe("data.downmix=2"),
    # ---- train
    describe("train.seed=-1"),
    describe("train.batch_size=0", expected="train.batch_size=0: must be an integer >= 1"),
    describe("train.batch_size=8.5"),
    describe("train.epochs=0"),
    describe("train.epochs=2.5", expected="train.epochs=2.5: must be an integer >= 1"),
    describe("train.epochs=ten"),
    describe("train.max_steps=-1"),
    describe("train.optimizer=sgd", expected="must be one of adam, adamw"),
    describe("train.lr=0", expected="train.lr=0: must be a finite number > 0"),
    describe("train.lr=-0.001"),
    describe("train.lr=nan", expected="train.lr=nan: must be a finite number > 0"),
    describe("train.lr=inf"),
    describe("train.lr=fast"),
    describe("train.weight_decay=-1"),
    describe("train.lr_schedule=cosine",
             expected="must be one of constant, warmup_cosine, warmup_linear, exponential, step, plateau"),
    describe("train.warmup_epochs=-1"),
    describe("train.decay_rate=0"),
    describe("train.decay_rate=1.5"),
    describe("train.decay_epochs=0"),
    describe("train.plateau_patience=0"),
    describe("train.plateau_factor=1"),
    describe("train.clip_grad_norm=-1"),
    describe("train.kl_schedule=cosine", expected="must be one of none, review, linear, sigmoid, cyclical"),
    describe("train.kl_warmup_epochs=-1"),
    describe("train.kl_anneal_epochs=0",
             expected="train.kl_anneal_epochs=0: must be > 0 with train.kl_schedule=review"),
    describe("train.kl_cycles=0"),
    describe("train.beta=-1"),
    describe("train.free_bits=-0.5"),
    describe("train.scheduled_sampling=1.5"),
    describe("train.ss_start_epochs=-1"),
    describe("train.ss_ramp_epochs=-1"),
    describe("train.ss_per=batch", expected="must be one of frame, sequence"),
    describe("train.early_stop_patience=0"),
    describe("train.nan_patience=0"),
    describe("train.nan_max_rollbacks=-1"),
    describe("train.checkpoint_every_steps=-1"),
    describe("train.prefetch=-1"),
    describe("train.log_every_steps=-1"),
    # ---- keys and config files
    describe("model.z_dm=3", expected="unknown config key 'model.z_dm'. Did you mean: model.z_dim"),
    describe("model=3", expected="unknown config key 'model'"),
    describe("model.z_dim.x=3", expected="unknown config key 'model.z_dim.x'"),
    describe("z_dim", expected="override 'z_dim' is not of the form key=value"),
    bad(["describe", "--config", "vrnn_mell"], "unknown config 'vrnn_mell'"),
    bad(["describe", "--config", "{tmp}/absent.json"], "absent.json' does not exist"),
    bad(["describe", "--config", "{tmp}/broken.json"], "broken.json is not valid JSON"),
    bad(["describe", "--config", "{tmp}/list.json"], "must hold a JSON object"),
    bad(["describe", "--config", "{tmp}/zero_z.json"], "zero_z.json: model.z_dim=0: must be an integer >= 1"),
    bad(["describe", "--config", "{tmp}/typo.json"], "unknown config key 'model.z_dm'"),
    # ---- train refuses before any work
    train("train.epochs=2.5", expected="train.epochs=2.5: must be an integer >= 1"),
    train("train.epochs=0"),
    train("train.batch_size=0"),
    train("train.lr=nan"),
    train("train.lr=-1"),
    train("train.optimizer=sgd"),
    train("train.lr_schedule=zigzag"),
    train("train.kl_schedule=sawtooth"),
    train("train.early_stop_patience=1.5"),
    train("train.max_steps=many"),
    bad(["train", "--config", "{tmp}/zero_z.json", "--workdir", "{tmp}/run"], "model.z_dim=0"),
    # ---- options of the other sub-commands (argparse types: one line too)
    *[bad(["generate", "--workdir", "{tmp}/emptyrun", *opt], msg) for opt, msg in (
        (["--n", "-1"], "--n: must be an integer in [1, 256], got -1"),
        (["--n", "2.5"], "--n: expected an integer, got '2.5'"),
        (["--seconds", "1e9"], "--seconds: must be a finite number in (0, 600]"),
        (["--seconds", "0"], "--seconds: must be a finite number in (0, 600]"),
        (["--seconds", "nan"], "--seconds: must be a finite number"),
        (["--prime-seconds", "-1"], "--prime-seconds: must be a finite number in (0, 600]"),
        (["--temperature", "-0.5"], "--temperature: must be a finite number in [0, 100]"),
        (["--temperature", "inf"], "--temperature: must be a finite number"),
        (["--griffin-lim-iters", "0"], "--griffin-lim-iters: must be an integer in [1, 10000]"),
        (["--seed", "-1"], "--seed: must be an integer in [0, 2147483647]"),
        (["--mode", "warm"], "invalid choice: 'warm'"),
        (["--decode", "median"], "invalid choice: 'median'"),
        (["--audio", "{tmp}", "--corpus", "folder"], "either --audio DIR or --corpus NAME --root PATH"),
    )],
    *[bad(["evaluate", "--workdir", "{tmp}/emptyrun", *opt], msg) for opt, msg in (
        (["--n", "-1"], "--n: must be an integer >= 0, got -1"),
        (["--batch-size", "0"], "--batch-size: must be an integer in [1, 4096]"),
        (["--n-iter", "0"], "--n-iter: must be >= 1"),
        (["--asr-n", "-2"], "--asr-n: must be an integer >= 0"),
        (["--active-threshold", "nan"], "--active-threshold: must be a finite number"),
        (["--split", "dev"], "invalid choice: 'dev'"),
    )],
    bad(["bench", "--steps", "0"], "--steps: must be an integer >= 1"),
    bad(["bench", "--frames", "1"], "--frames: must be an integer >= 2"),
    bad(["bench", "--models", "lstm"], "--models: unknown model 'lstm'"),
    bad(["nosuch"], "invalid choice: 'nosuch'"),
    bad(["sweep", "nope"], "study file 'nope' not found"),
    bad(["sweep", "tiny", "--workers", "0"], "--workers: must be an integer in [1, 64]"),
    bad(["sweep", "tiny", "--n-trials", "-3"], "--n-trials: must be an integer >= 1"),
    bad(["report", "--study", "{tmp}/nowhere"], "holds no sweep"),
    bad(["report"], "give a sweep (--study DIR) or a run directory (--run LABEL=DIR)"),
    bad(["generate"], "the following arguments are required: --workdir"),
    # ---- paths and files
    bad(["generate", "--workdir", "{tmp}/nowhere"], "nowhere is not a dvae-jax run directory"),
    bad(["generate", "--workdir", "{tmp}/emptyrun"], "emptyrun is not a dvae-jax run directory"),
    bad(["evaluate", "--workdir", "{tmp}/badrun"], "badrun/config.json is corrupted or truncated"),
    bad(["generate", "--workdir", "{tmp}/badrun"], "badrun/config.json is corrupted or truncated"),
    bad(["export-review", "--workdir", "{tmp}/nowhere", "--out", "{tmp}/x.pt"], "not a dvae-jax run directory"),
    bad(["upgrade-run", "--workdir", "{tmp}/nowhere"], "not a dvae-jax run directory"),
    bad(["import-review", "{tmp}/absent.pt", "--preset", "vrnn_review_speech", "--out", "{tmp}/o"],
        "absent.pt: no such checkpoint file"),
    bad(["import-review", "{tmp}/not_a_checkpoint.pt", "--preset", "srnn_review_speech", "--out", "{tmp}/o",
         "--set", "model.rnn_cell=gru"], "model.rnn_cell=gru has no counterpart in the review's code"),
    bad(["import-review", "{tmp}/not_a_checkpoint.pt", "--preset", "srnn_review_speech", "--out", "{tmp}/o",
         "--set", "model.separate_heads=true"], "model.separate_heads=true has no counterpart"),
    bad(["import-review", "{tmp}/not_a_checkpoint.pt", "--preset", "vrnn_review_speech", "--out", "{tmp}/o"],
        "not a readable PyTorch checkpoint"),
    bad(["describe", "--preset", "nosuch"], "unknown model preset 'nosuch'"),
    bad(["prepare", "--corpus", "folder"], "corpus 'folder' needs a location"),
    bad(["prepare", "--corpus", "folder", "--root", "{tmp}/nowhere"], "nowhere' does not exist"),
    bad(["prepare", "--corpus", "vctk", "--root", "{tmp}/emptyrun"], "has neither wav48_silence_trimmed/"),
    bad(["prepare", "--config", "vrnn_mell"], "unknown config 'vrnn_mell'"),
]


@pytest.mark.parametrize("argv,expected", BAD)
def test_bad_input_is_one_line_and_status_2(argv, expected, tmp_path, capsys):
    for name, content in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        status = cli.main(argv)
    except SystemExit as e:  # argparse usage errors
        status = e.code
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "run").exists()  # refused before any work


def test_count_of_rows():
    """The table is the record of what was tried (reported in the issue's closing note)."""
    assert len(BAD) >= 120


@pytest.mark.parametrize("args", [
    ["describe", "--config", "vrnn_mel_gaussian", "--set", "model.z_dim=0"],
    ["train", "--config", "vrnn_mel_gaussian", "--workdir", "{tmp}/run", "--set", "train.epochs=2.5"],
])
def test_as_a_process_too(args, tmp_path):
    """The same through a real process: exit status 2 and one line, whatever the logging setup."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, "-m", "dvae_jax.cli", *args], check=False, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "must be an integer >= 1" in r.stderr
    assert not (tmp_path / "run").exists()
