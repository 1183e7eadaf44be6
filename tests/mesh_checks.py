"""Checks that need several devices, run by tests/test_mesh.py in a subprocess whose XLA_FLAGS
force 4 host devices (the pytest process itself has one). Prints one JSON line of measurements;
the test asserts on them.

    python tests/mesh_checks.py step CONFIG.json
    python tests/mesh_checks.py layouts CONFIG.json OUTDIR
    python tests/mesh_checks.py resume CONFIG.json KILLED_WORKDIR OUTDIR
    python tests/mesh_checks.py compare CONFIG.json MULTIHOST_WORKDIR OUTDIR
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dvae_jax import checkpoint, distributed, fit, models, train
from dvae_jax import config as config_lib
from dvae_jax.data import batches as batches_lib
from dvae_jax.data import prepare
from tests import model_checks


def _load(path: str):
    cfg = config_lib.load_json(config_lib.Config, path)
    ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
    return fit.resolve_model(cfg, ds.n_bins), ds


def _errors(a, b) -> dict:
    """Largest absolute difference over all leaves, and largest relative one (per leaf, to the
    leaf's largest magnitude: model_checks.rel_err)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    pairs = [(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in zip(la, lb, strict=True)]
    pairs = [(x, y) for x, y in pairs if x.size]
    return {"abs": max((float(np.max(np.abs(x - y))) for x, y in pairs), default=0.0),
            "rel": max((model_checks.rel_err(y, x) for x, y in pairs), default=0.0)}


def _restore(workdir, placement=None):
    """The latest checkpoint restored onto templates on ``placement``'s mesh (one device without)."""
    cfg = checkpoint.load_config(workdir)
    template = models.init(cfg.model, jax.random.PRNGKey(0))
    if placement is not None and placement.mesh is not None:
        template = placement.replicate(template)
    ck = checkpoint.RunCheckpoints(workdir)
    try:
        return ck.restore("latest", template)
    finally:
        ck.close()


def _spec(arr) -> str:
    sh = getattr(arr, "sharding", None)
    if sh is None:
        return "host array"
    return str(getattr(sh, "spec", "single")) + f" on {len(sh.device_set)}"


def step(cfg_path: str) -> dict:
    """The same steps on one device and on a data=4 mesh, from the same state, batches and keys."""
    cfg, ds = _load(cfg_path)
    tc = cfg.train
    mesh = distributed.Placement.from_text("data=4")
    tx = train.make_optimizer(tc, 10, 100)
    state0 = train.init_state(models.init(cfg.model, jax.random.PRNGKey(0)), tx)
    batches = list(batches_lib.train_batches(ds, "train", tc.batch_size, cfg.data.seq_len, 0, 0))[:5]
    out = {}
    for name, placement in (("one", distributed.Placement()), ("mesh", mesh)):
        sh = train.shardings_for(placement, state0, tc.batch_size)
        step_fn, eval_fn = train.make_steps(cfg.model, tc, tx, 10, 100, sh)
        state = jax.tree_util.tree_map(np.asarray, state0)  # fresh buffers: the step donates them
        state = jax.device_put(state, sh.state) if sh else jax.tree_util.tree_map(jax.numpy.array, state)
        metrics = []
        for i, b in enumerate(batches):
            state, m = step_fn(state, placement.put_batch(b), jax.random.PRNGKey(i))
            metrics.append({k: float(m[k]) for k in ("loss", "recon", "kl", "grad_norm")})
            if i == 0:
                first = jax.tree_util.tree_map(np.asarray, state.params)
                placed = placement.put_batch(b)["x"]
        ev = eval_fn(state.params, placement.put_batch(batches[0]), jax.random.PRNGKey(9))
        out[name] = {"first": first, "last": jax.tree_util.tree_map(np.asarray, state.params),
                     "opt": jax.tree_util.tree_map(np.asarray, state.opt_state), "metrics": metrics,
                     "eval": float(ev["loss"]), "batch_spec": _spec(placed),
                     "param_spec": _spec(jax.tree_util.tree_leaves(state.params)[0])}
    one, sh = out["one"], out["mesh"]
    carry = _streams_steps(cfg, tx, batches, mesh)
    return {
        "streams": carry,
        "first_step": _errors(one["first"], sh["first"]),
        "five_steps": _errors(one["last"], sh["last"]),
        "opt_state": _errors(one["opt"], sh["opt"]),
        "metrics": _errors([list(m.values()) for m in one["metrics"]], [list(m.values()) for m in sh["metrics"]]),
        "eval": abs(one["eval"] - sh["eval"]) / abs(one["eval"]),
        "param_spec": sh["param_spec"], "batch_spec": sh["batch_spec"], "one_spec": one["param_spec"],
    }


def _streams_steps(cfg, tx, batches, mesh) -> dict:
    """Steps that carry the recurrent state between batches (data.batching=streams): the carry
    is split by rows on the mesh and continues as on one device."""
    model = models.build(cfg.model)
    variables = models.init(cfg.model, jax.random.PRNGKey(1))
    host = jax.tree_util.tree_map(np.asarray, train.init_state(
        variables, tx, model.initial_carry(model.params(variables), cfg.train.batch_size)))
    got = {}
    for name, placement in (("one", distributed.Placement()), ("mesh", mesh)):
        sh = train.shardings_for(placement, host, cfg.train.batch_size)
        step_fn, _ = train.make_steps(cfg.model, cfg.train, tx, 10, 100, sh)
        state = jax.device_put(host, sh.state) if sh else jax.tree_util.tree_map(jax.numpy.array, host)
        for i, b in enumerate(batches[:3]):
            state, _ = step_fn(state, placement.put_batch(b), jax.random.PRNGKey(i))
        got[name] = (jax.tree_util.tree_map(np.asarray, (state.params, state.carry)),
                     _spec(jax.tree_util.tree_leaves(state.carry)[0]))
    return {"errors": _errors(got["one"][0], got["mesh"][0]), "carry_spec": got["mesh"][1]}


def layouts(cfg_path: str, outdir: str) -> dict:
    """fit on one device and on data=4; each checkpoint restored on the other layout; each run
    resumed for one more epoch on the other layout."""
    cfg, ds = _load(cfg_path)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    out, mesh = Path(outdir), distributed.Placement.from_text("data=4")
    fit.fit(cfg, out / "one", progress=False, dataset=ds)
    fit.fit(cfg, out / "four", progress=False, dataset=ds, placement=mesh)
    res = {"fit_one_vs_four": _errors(_restore(out / "one").variables, _restore(out / "four").variables)}
    on_one, on_four = _restore(out / "four"), _restore(out / "four", mesh)
    res["four_restored_on_one_vs_four"] = _errors(on_one.variables, on_four.variables)
    res["restored_specs"] = [_spec(jax.tree_util.tree_leaves(x.variables)[0]) for x in (on_one, on_four)]
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=cfg.train.epochs + 1))
    r41 = fit.fit(more, out / "four", resume=True, progress=False, dataset=ds)  # 4 devices -> 1
    r14 = fit.fit(more, out / "one", resume=True, progress=False, dataset=ds, placement=mesh)  # 1 -> 4
    res["resumed"] = [r41.steps, r14.steps, r41.stopped, r14.stopped]
    res["resumed_one_vs_four"] = _errors(_restore(out / "one").variables, _restore(out / "four").variables)
    res["epoch_rows"] = [len([r for r in fit.read_metrics(out / d) if r["kind"] == "epoch"]) for d in ("one", "four")]
    res["devices"] = [[r["devices"] for r in fit.read_metrics(out / d) if r["kind"] == "epoch"] for d in ("one", "four")]
    return res


def resume(cfg_path: str, killed: str, outdir: str) -> dict:
    """The killed data=4 run resumed on data=4, against an uninterrupted data=4 run."""
    cfg, ds = _load(cfg_path)
    mesh = distributed.Placement.from_text("data=4")
    meta = _restore(killed).meta
    fit.fit(cfg, killed, resume=True, progress=False, dataset=ds, placement=mesh)
    fit.fit(cfg, Path(outdir) / "whole", progress=False, dataset=ds, placement=mesh)
    a, b = _restore(killed), _restore(Path(outdir) / "whole")
    val = [[r["val_loss"] for r in fit.read_metrics(d) if r["kind"] == "epoch"] for d in (killed, Path(outdir) / "whole")]
    return {"killed_at": {"epoch": meta["epoch"], "batch": meta["batch"], "done": meta["done"]},
            "steps": [a.step, b.step], "errors": _errors(a.variables, b.variables), "val_equal": val[0] == val[1]}


def compare(cfg_path: str, multihost: str, outdir: str) -> dict:
    """The two-process run's parameters against one process on 4 devices and on one device."""
    cfg, ds = _load(cfg_path)
    fit.fit(cfg, Path(outdir) / "four", progress=False, dataset=ds,
            placement=distributed.Placement.from_text("data=4"))
    fit.fit(cfg, Path(outdir) / "one", progress=False, dataset=ds)
    mh = _restore(multihost)
    return {
        "steps": mh.step,
        "vs_one_process_four_devices": _errors(_restore(Path(outdir) / "four").variables, mh.variables),
        "vs_one_device": _errors(_restore(Path(outdir) / "one").variables, mh.variables),
        "epoch_rows": len([r for r in fit.read_metrics(multihost) if r["kind"] == "epoch"]),
        "devices": [r["devices"] for r in fit.read_metrics(multihost) if r["kind"] == "epoch"],
    }


def main(argv: list[str]) -> None:
    fn = {"step": step, "layouts": layouts, "resume": resume, "compare": compare}[argv[0]]
    result = fn(*argv[1:])
    print("MESH_CHECK " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
