"""The study report's own pieces: early stopping replayed on a curve (checked against a real run
that stopped), and the section of labelled run directories (real evaluate output)."""

import dataclasses
import json

import pytest
import tiny_runs

from dvae_jax import errors, evaluate, fit, study_report


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # a high learning rate makes the tiny run's validation curve go up and down
    return tiny_runs.tiny_mel(tmp_path_factory.mktemp("cache"), epochs=10, kl_schedule="linear", kl_warmup_epochs=0,
                              kl_anneal_epochs=1, lr=0.03, early_stop_patience=1000)


def _curve(workdir) -> list[float]:
    return [r["val_loss"] for r in fit.read_metrics(workdir) if r.get("kind") == "epoch"]


def test_replay_follows_the_fit_loops_rule():
    # patience counts epochs without a strictly lower loss, from the end of the KL annealing on
    curve = [5.0, 4.0, 4.5, 4.6, 3.0, 3.0, 3.1, 2.0]
    assert study_report.replay_early_stopping(curve, 2, warm_epochs=0) == (3, 1)
    # epochs 1-2 not counted; the equal loss of epoch 5 is no improvement
    assert study_report.replay_early_stopping(curve, 2, warm_epochs=3) == (6, 4)
    assert study_report.replay_early_stopping(curve, 3, warm_epochs=0) == (7, 7)  # improves just in time


def test_replay_on_an_unstopped_run_matches_a_run_that_stopped(tiny, tmp_path):
    # given one run without early stopping and the same run with patience 2
    cfg, ds = tiny
    fit.fit(cfg, tmp_path / "never", dataset=ds, progress=False)
    stopping = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, early_stop_patience=2))
    res = fit.fit(stopping, tmp_path / "p2", dataset=ds, progress=False)
    full, stopped = _curve(tmp_path / "never"), _curve(tmp_path / "p2")
    assert res.stopped == "early_stopping" and len(stopped) < len(full), "the tiny run must stop early to test"
    # then the replay on the full curve stops where the real run stopped and keeps its best epoch
    assert stopped == full[:len(stopped)]
    last, best = study_report.replay_early_stopping(full, 2, warm_epochs=1)
    assert (last, best) == (len(stopped) - 1, res.best_epoch)


def test_run_directories_get_their_evaluation_rows(tiny, tmp_path):
    cfg, ds = tiny
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    fit.fit(short, tmp_path / "a", dataset=ds, progress=False)
    # without an evaluation: one clear error naming the command to run
    with pytest.raises(errors.RunError, match="dvae-jax evaluate"):
        study_report.runs_section([("best", tmp_path / "a")])
    evaluate.evaluate_run(tmp_path / "a", split="test", n=2, metrics=["estoi"], quality=False, asr_n=0,
                          dataset=ds, progress=False)
    lines = study_report.runs_section([("best", tmp_path / "a"), ("default", tmp_path / "a")])
    table = [ln for ln in lines if ln.startswith(("| best |", "| default |"))]
    assert len(table) == 4 and any("| estoi |" in ln for ln in lines)  # model and ceiling rows per run
    res = json.loads((tmp_path / "a" / "evaluation" / "results.json").read_text())
    (ceiling,) = [st["mean"] for k, st in res["ceiling"]["aggregate"].items() if k.startswith("estoi ")]
    assert f"| {ceiling:.3f} |" in table[1] and table[1].startswith("| best | ceiling |")
    # the second run of the same model is paired with the first, utterance by utterance (here: itself)
    (paired,) = [ln for ln in lines if ln.startswith("| default - best |")]
    assert "| 0.000 [0.000, 0.000] (n=2) |" in paired
    # runs alone, without a sweep, make a report of their own
    out = study_report.write_report([], tmp_path / "runs.md", title="Runs only", runs=[("best", tmp_path / "a")])
    text = out.read_text()
    assert text.startswith("# Runs only") and "## Runs\n" in text and "| best | ceiling |" in text
    # with primed generations of two runs of one model, their clips are paired by prime utterance
    from dvae_jax import generate_command

    fit.fit(short, tmp_path / "b", dataset=ds, progress=False)
    evaluate.evaluate_run(tmp_path / "b", split="test", n=2, metrics=["estoi"], quality=False, asr_n=0,
                          dataset=ds, progress=False)
    for run in ("a", "b"):
        generate_command.generate_run(tmp_path / run, out=tmp_path / run / "generate" / "primed", dataset=ds,
                                      mode="primed", n=2, seconds=0.3, prime_seconds=0.2, quality=False,
                                      figures=False, n_iter=4)
    lines = study_report.runs_section([("a", tmp_path / "a"), ("b", tmp_path / "b")])
    (gen,) = [ln for ln in lines if ln.startswith("| b - a | primed |")]
    assert gen.count("(n=2)") >= 3  # flux, voicing, continuity: paired over the two primes


def test_learned_nu_is_read_from_the_best_checkpoint(tiny, tmp_path):
    from dvae_jax import sweep

    cfg, ds = tiny
    one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    student = dataclasses.replace(one, model=dataclasses.replace(one.model, prior="student_t", nu=5.0, learn_nu=True))
    fit.fit(student, tmp_path / "t", dataset=ds, progress=False)
    nu = sweep.learned_nu(tmp_path / "t")
    assert len(nu) == cfg.model.z_dim and all(2.0 < v for v in nu)
    assert any(abs(v - 5.0) > 1e-4 for v in nu)  # it moved from its start
    fit.fit(one, tmp_path / "g", dataset=ds, progress=False)
    assert sweep.learned_nu(tmp_path / "g") is None and sweep.learned_nu(tmp_path / "missing") is None
