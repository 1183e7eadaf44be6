"""Sweeps on Optuna: study files and search spaces, a tiny sweep of run directories and its report,
two processes on one study, resume after a kill, and a study on a real local PostgreSQL server."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from dvae_jax import checkpoint, run_dir, study_report, sweep
from dvae_jax import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
TINY = {  # a tiny VRNN on a tiny mini corpus: one epoch is a few steps
    "model.z_dim": 4, "model.dense_x": [16], "model.dense_z": [16], "model.dim_rnn": 16,
    "features.n_mels": 20, "data.mini_speakers": 4, "data.mini_sentences": 5, "data.seq_len": 20,
    "data.val_fraction": 0.25, "data.test_fraction": 0.25, "train.batch_size": 8, "train.epochs": 1,
    "train.kl_schedule": "linear", "train.kl_warmup_epochs": 0, "train.kl_anneal_epochs": 1,
    "train.log_every_steps": 0,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _study(tmp_path: Path, cache: str, name: str = "t", epochs: int = 1, **extra) -> Path:
    """A study file whose two trials differ by seed only: one compiled program for all tests."""
    spec = {
        "name": name, "question": "smoke", "base_config": "vrnn_mel_gaussian",
        "overrides": {**TINY, "data.cache_dir": cache, "train.epochs": epochs},
        "space": {"train.seed": {"type": "categorical", "choices": [0, 1]}},
        "objectives": [{"metric": "val_loss"}], "budget": {"n_trials": 2},
        "sampler": {"name": "grid"}, "pruner": {"name": "median"}, **extra,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}


def _states(study) -> list[str]:
    return sorted(t.state.name for t in study.get_trials(deepcopy=False))


# ------------------------------------------------------------------------------------------------
# Study files and spaces (no training)


def test_the_shipped_study_files_load():
    for path in sorted((ROOT / "experiments" / "studies").glob("*.json")):
        spec = sweep.load_study(str(path))
        assert spec.space and spec.n_trials >= 1, path.name


def test_conditional_and_grouped_parameters_become_config_overrides(tmp_path, cache):
    # given a space with nu only for Student-t and an architecture naming several keys
    path = _study(tmp_path, cache, space=None)
    raw = json.loads(path.read_text())
    raw["space"] = {
        "model.prior": {"type": "categorical", "choices": ["gaussian", "student_t"]},
        "model.nu": {"type": "float", "low": 2.5, "high": 30, "log": True, "if": {"model.prior": "student_t"}},
        "hidden": {"type": "categorical", "choices": [16, 32], "keys": ["model.dim_rnn", "model.dim_rnn_g"]},
        "architecture": {"type": "categorical", "choices": ["vrnn", "srnn"],
                         "values": {"vrnn": {"model.model": "vrnn"}, "srnn": {"model.model": "srnn"}}},
    }
    raw.pop("sampler")
    path.write_text(json.dumps(raw))
    spec = sweep.load_study(str(path))
    # when a Gaussian trial is drawn, then nu is not a parameter and the base nu stays
    g = optuna.trial.FixedTrial({"model.prior": "gaussian", "hidden": 32, "architecture": "srnn"})
    values = sweep.suggest(g, spec)
    assert "model.nu" not in values
    cfg = sweep.trial_config(spec, values, seed=3)
    assert (cfg.model.prior, cfg.model.dim_rnn, cfg.model.dim_rnn_g, cfg.model.model) == ("gaussian", 32, 32, "srnn")
    assert cfg.train.seed == 3 and cfg.model.z_dim == 4
    # when a Student-t trial is drawn, then its nu reaches the config
    t = optuna.trial.FixedTrial({"model.prior": "student_t", "model.nu": 7.5, "hidden": 16, "architecture": "vrnn"})
    cfg = sweep.trial_config(spec, sweep.suggest(t, spec), seed=0)
    assert (cfg.model.prior, cfg.model.nu) == ("student_t", 7.5)


def test_a_toml_study_file_reads_like_json(tmp_path, cache):
    path = tmp_path / "t.toml"
    path.write_text(f"""
name = "t"
base_config = "vrnn_mel_gaussian"
seeds = [4, 5]
[overrides]
"data.cache_dir" = "{cache}"
[space."model.prior"]
type = "categorical"
choices = ["gaussian", "student_t"]
[space."model.nu"]
type = "float"
low = 2.5
high = 30.0
log = true
if = {{"model.prior" = "student_t"}}
[budget]
n_trials = 3
""")
    spec = sweep.load_study(str(path))
    assert [p.name for p in spec.space] == ["model.prior", "model.nu"] and spec.space[1].log
    assert spec.seeds == (4, 5) and spec.n_trials == 3 and spec.sampler == {"name": "tpe"}


def test_a_bad_study_file_is_one_clear_error(tmp_path, cache):
    path = _study(tmp_path, cache, space={"model.z_dimm": {"type": "int", "low": 2, "high": 8}}, sampler={})
    with pytest.raises(config_lib.ConfigError, match="model.z_dimm"):
        sweep.load_study(str(path))
    path = _study(tmp_path, cache, space={"train.lr": {"type": "float", "low": 1, "high": 0}}, sampler={})
    with pytest.raises(config_lib.ConfigError, match="low"):
        sweep.load_study(str(path))
    with pytest.raises(config_lib.ConfigError, match="not found"):
        sweep.load_study(str(tmp_path / "missing.json"))


def test_command_line_sets_run_one_study_file_on_another_corpus_and_model(tmp_path, cache):
    # given the shipped Q1 file and the command line's --set items
    sets = ["data.corpus=asterisk", "data.split_by=utterance", "model.model=srnn"]
    spec = sweep.load_study("q1_prior", sets)
    # then they join the fixed overrides, the name says what ran, and every trial config has them
    assert spec.name == "q1_prior_asterisk_utterance_srnn" and spec.sets == tuple(sets)
    assert spec.overrides["data.corpus"] == "asterisk" and spec.overrides["train.epochs"] == 12
    t = optuna.trial.FixedTrial({"prior": "student_t_nu3", "train.seed": 1})
    cfg = sweep.trial_config(spec, sweep.suggest(t, spec), seed=1)
    assert (cfg.data.corpus, cfg.data.split_by, cfg.model.model, cfg.model.nu) == ("asterisk", "utterance", "srnn", 3.0)
    assert sweep.load_study("q1_prior", sets, name="mine").name == "mine"
    # another model's config as the base: its layout (the SRNN config's decoder MLP) reaches every trial
    srnn = sweep.load_study("q1_prior", sets[:2], base_config="srnn_mel_gaussian")
    assert srnn.name == "q1_prior_asterisk_utterance_srnn" and srnn.base_config == "srnn_mel_gaussian"
    cfg = sweep.trial_config(srnn, sweep.suggest(t, srnn), seed=1)
    assert (cfg.model.model, cfg.model.dense_hz_x, cfg.data.corpus) == ("srnn", (256,), "asterisk")
    # a bad item or key is one clear error
    with pytest.raises(config_lib.ConfigError, match="KEY=VALUE"):
        sweep.load_study("q1_prior", ["data.corpus"])
    with pytest.raises(config_lib.ConfigError, match="data.corpuss"):
        sweep.load_study("q1_prior", ["data.corpuss=asterisk"])
    with pytest.raises(config_lib.ConfigError, match="srnn_mel_gausian"):
        sweep.load_study("q1_prior", base_config="srnn_mel_gausian")


# ------------------------------------------------------------------------------------------------
# Sweeps


def test_a_tiny_sweep_trains_two_run_directories_and_reports_them(tmp_path, cache):
    # given a two-trial study of one epoch each
    spec = sweep.load_study(str(_study(tmp_path, cache)))
    # when it runs
    summary = sweep.run_sweep(spec, tmp_path / "s")
    # then the SQLite study holds two complete trials, each a normal run directory with its seed
    assert (summary.complete, summary.failed) == (2, 0)
    study = optuna.load_study(study_name="t", storage=sweep.default_storage(tmp_path / "s"))
    seeds = set()
    for t in study.trials:
        run = Path(t.user_attrs["workdir"])
        assert run == tmp_path / "s" / "trials" / str(t.number)
        cfg = checkpoint.load_config(run)
        assert cfg.train.seed == t.user_attrs["seed"] == t.params["train.seed"]
        assert t.values[0] == pytest.approx(t.user_attrs["val_loss"])
        assert t.intermediate_values  # reported per epoch for the pruner
        assert len(t.user_attrs["kl_per_dim"]) == cfg.model.z_dim  # collapse diagnostics for the report
        assert run_dir.load(run).normalizer is not None  # self-contained: evaluate / generate need no corpus
        seeds.add(cfg.train.seed)
    assert seeds == {0, 1}
    # and a second call finds the budget spent and trains nothing
    again = sweep.run_sweep(spec, tmp_path / "s")
    assert again.complete == 2 and len(study.trials) == 2
    # and the report has the factor table with its interval and the figures next to it
    out = study_report.write_report([tmp_path / "s"], tmp_path / "rep" / "REPORT.md")
    text = out.read_text()
    assert "| train.seed |" not in text.split("### Settings")[0]  # the seed is not a factor
    assert "### Best trials" in text and "trials/" in text
    assert any(p.suffix == ".png" for p in out.parent.iterdir())


def test_two_processes_share_one_study(tmp_path, cache):
    # given a study file and `--workers 2`
    path = _study(tmp_path, cache, name="shared")
    # when the command runs
    proc = subprocess.run([sys.executable, "-m", "dvae_jax.cli", "sweep", str(path), "--study-dir",
                           str(tmp_path / "s"), "--workers", "2"], check=False, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # then both workers ran trials of the one study, each in its own run directory
    study = optuna.load_study(study_name="shared", storage=sweep.default_storage(tmp_path / "s"))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 2 and len({t.number for t in done}) == len(done)
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2, workers
    assert (tmp_path / "s" / "worker-0.log").exists() and (tmp_path / "s" / "worker-1.log").exists()


def test_a_killed_sweep_resumes_and_re_runs_the_killed_trial(tmp_path, cache):
    # given a sweep killed while its first trial trains (heartbeat 1 s, grace 2 s)
    path = _study(tmp_path, cache, name="killed", epochs=2)
    study_dir = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "dvae_jax.cli", "sweep", str(path), "--study-dir",
                             str(study_dir), "--heartbeat", "1"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = study_dir / "trials" / "0" / "checkpoints" / "latest"
    deadline = time.time() + 120
    while not (latest.exists() and any(latest.iterdir())) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.exists(), "the trial never started"
    # past the grace period: the dead worker's trial is stale. SQLite's clock (optuna compares
    # CURRENT_TIMESTAMP values) has whole seconds, so 2.5 s after the last heartbeat can read as 2,
    # not more than the 2 s grace: wait 3.5 s, which reads as 3 or more.
    time.sleep(3.5)
    # when the sweep runs again
    spec = sweep.load_study(str(path))
    summary = sweep.run_sweep(spec, study_dir, heartbeat_s=1)
    # then the killed trial is FAIL, re-queued with its parameters and seed, continued from its
    # run directory, and the study finishes its budget
    study = optuna.load_study(study_name="killed", storage=sweep.default_storage(study_dir))
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.FAIL
    retry = [t for t in study.trials if t.user_attrs.get("resumed_from") == 0]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == first.params and retry[0].user_attrs["seed"] == first.user_attrs["seed"]
    assert summary.complete == 2


# ------------------------------------------------------------------------------------------------
# PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on a unix socket in a temporary directory."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL test skipped: initdb / pg_ctl not found (apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="PostgreSQL test skipped: pip install psycopg2-binary")
    root = tempfile.mkdtemp(prefix="dvae_pg_")
    as_root = os.geteuid() == 0  # PostgreSQL refuses to run as root: use the postgres account

    def run(*cmd):
        line = " ".join(cmd)
        full = ["su", "postgres", "-c", line] if as_root else ["bash", "-c", line]
        return subprocess.run(full, check=False, capture_output=True, text=True, timeout=60)

    if as_root:
        if subprocess.run(["id", "postgres"], check=False, capture_output=True).returncode:
            pytest.skip("PostgreSQL test skipped: running as root and there is no postgres account")
        shutil.chown(root, "postgres")
    data, port = f"{root}/data", _free_port()
    r = run(initdb, "-D", data, "--auth=trust", "-U", "postgres")
    if r.returncode:
        pytest.skip(f"PostgreSQL test skipped: initdb failed ({r.stderr.strip()[:200]})")
    r = run(pg_ctl, "-D", data, "-l", f"{root}/log", "-w", "-o",
            f"\"-k {root} -p {port} -c listen_addresses=''\"", "start")
    if r.returncode:
        pytest.skip(f"PostgreSQL test skipped: the server did not start ({r.stderr.strip()[:200]})")
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={root}&port={port}"
    finally:
        run(pg_ctl, "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_a_study_on_a_local_postgresql_server(tmp_path, cache, postgres):
    # given a PostgreSQL storage URL
    spec = sweep.load_study(str(_study(tmp_path, cache, name="pg")))
    # when the sweep runs against it
    summary = sweep.run_sweep(spec, tmp_path / "s", storage=postgres)
    # then the trials are in PostgreSQL (not in a SQLite file) and the report reads them
    assert summary.complete == 2
    assert not (tmp_path / "s" / "study.db").exists()
    study = optuna.load_study(study_name="pg", storage=postgres)
    assert len(study.trials) == 2
    out = study_report.write_report([tmp_path / "s"], tmp_path / "REPORT.md", storage=postgres)
    assert "### Best trials" in out.read_text()


# ------------------------------------------------------------------------------------------------
# Populations in a sweep


@pytest.mark.slow
def test_a_population_sweep_trains_members_together_each_as_its_lone_run(tmp_path, cache):
    # given a grid of two trials differing in epochs (a member key) trained as one population
    path = _study(tmp_path, cache, name="pop", epochs=2, population={"size": 2},
                  space={"train.epochs": {"type": "categorical", "choices": [1, 2]}})
    spec = sweep.load_study(str(path))
    # when it runs
    summary = sweep.run_sweep(spec, tmp_path / "s")
    # then both trials completed in one population, each stopping after its own epochs
    assert summary.complete == 2
    study = optuna.load_study(study_name="pop", storage=sweep.default_storage(tmp_path / "s"))
    for t in study.trials:
        assert t.user_attrs["population"] == 2 and t.user_attrs["stopped"] == "epochs"
        assert t.user_attrs["epochs"] == t.params["train.epochs"]
        cfg, _, meta = checkpoint.load_run(t.user_attrs["workdir"])  # evaluate / generate load it so
        assert cfg.train.epochs == t.params["train.epochs"] and meta["checkpoint"] == "best"
        assert run_dir.load(t.user_attrs["workdir"]).normalizer is not None
    # and the two-epoch member's validation curve is the one fit gives that config alone
    from dvae_jax import fit

    member = next(t for t in study.trials if t.params["train.epochs"] == 2)
    cfg = checkpoint.load_config(member.user_attrs["workdir"])
    fit.fit(cfg, tmp_path / "alone", progress=False)
    alone = [r["val_loss"] for r in fit.read_metrics(tmp_path / "alone") if r["kind"] == "epoch"]
    together = [r["val_loss"] for r in fit.read_metrics(member.user_attrs["workdir"]) if r["kind"] == "epoch"]
    assert together == pytest.approx(alone, rel=1e-5)
