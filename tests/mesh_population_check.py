"""Run by tests/test_population_mesh.py in a process that sees 4 (host) devices: trains one tiny
population of 3 members twice, on one device and on a members=2,data=2 mesh (padded to 4
members), and prints JSON: the members' parameter and validation differences, the shardings the
sharded run used, and the errors of meshes that cannot hold the population.

Usage: python tests/mesh_population_check.py WORKDIR
"""

import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiny_runs, beside this file

from tiny_runs import tiny_mel

from dvae_jax import distributed, errors, fit, population

MESH = "members=2,data=2"


def members(cfg):
    """Three members differing in seed, peak LR, beta and KL schedule (member keys)."""
    t = cfg.train
    trains = [dataclasses.replace(t, seed=0, lr=2e-3),
              dataclasses.replace(t, seed=1, lr=5e-3, beta=0.5),
              dataclasses.replace(t, seed=2, lr=1e-3, kl_schedule="none")]
    return [dataclasses.replace(cfg, train=tr) for tr in trains]


def spec(sharding) -> list:
    return [list(a) if isinstance(a, tuple) else a for a in sharding.spec]


def record_steps(seen: dict, last: dict):
    """Wraps Population.train_step to note where its first sharded call's state and batch live
    and to keep each run's last state (its final parameters: nothing updates them after)."""
    step = population.Population.train_step

    def wrapped(self, state, batch, active):
        new, metrics = step(self, state, batch, active)
        last["mesh" if self.placement.mesh is not None else "one"] = new
        if not seen and self.placement.mesh is not None:
            leaf = jax.tree_util.tree_leaves(new.params)[0]
            seen.update(k=int(leaf.shape[0]), params=spec(leaf.sharding), batch=spec(self.train_batch(batch)["x"].sharding),
                        metrics=spec(metrics["loss"].sharding), shards=len(leaf.sharding.device_set))
        return new, metrics

    population.Population.train_step = wrapped


def refusal(fn) -> str:
    try:
        fn()
    except errors.DvaeError as e:
        return f"{type(e).__name__}: {e}"
    return ""


def main(out: Path) -> None:
    cfg, dataset = tiny_mel(out / "cache", epochs=2, kl_schedule="linear", kl_warmup_epochs=0,
                            kl_anneal_epochs=1)
    cfgs = members(cfg)
    seen: dict = {}
    last: dict = {}
    record_steps(seen, last)
    population._plots = lambda members: None  # the figures are not what this checks (and take 9 s)
    runs = {}
    for name, mesh in (("one", None), ("mesh", MESH)):
        dirs = [out / name / str(i) for i in range(len(cfgs))]
        population.train_population(cfgs, dirs, dataset, mesh=mesh)
        runs[name] = dirs
    abs_err, rel_err, elem_err, val_err = 0.0, 0.0, 0.0, 0.0
    one, mesh = (jax.tree_util.tree_leaves(jax.device_get(last[k].params)) for k in ("one", "mesh"))
    for x, y in zip(one, mesh):  # the members' (3) leaves; the mesh run's padding member is left out
        x, y = np.asarray(x, np.float64), np.asarray(y[: len(cfgs)], np.float64)
        abs_err = max(abs_err, float(np.max(np.abs(x - y))))
        for k in range(len(cfgs)):  # each member's tensor: |x - y| / |x| (Frobenius)
            rel_err = max(rel_err, float(np.linalg.norm(x[k] - y[k]) / max(np.linalg.norm(x[k]), 1e-12)))
        elem_err = max(elem_err, float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-3))))
    for a, b in zip(runs["one"], runs["mesh"]):
        va = [r["val_loss"] for r in fit.read_metrics(a) if r["kind"] == "epoch"]
        vb = [r["val_loss"] for r in fit.read_metrics(b) if r["kind"] == "epoch"]
        val_err = max(val_err, max(abs(x - y) / abs(x) for x, y in zip(va, vb)))
    auto = distributed.Placement.from_text("members=auto,data=2", distributed.AXES)
    bad = [out / "bad" / str(i) for i in range(len(cfgs))]
    result = {
        "abs_err": abs_err, "rel_err": rel_err, "elem_rel_err": elem_err, "val_rel_err": val_err,
        "sharded": seen, "dirs": sorted(p.name for p in (out / "mesh").iterdir()),
        "epochs": [len([r for r in fit.read_metrics(d) if r["kind"] == "epoch"]) for d in runs["mesh"]],
        "auto": dict(auto.mesh.shape), "steps": np.asarray(last["mesh"].step).tolist(),
        "bad_batch": refusal(lambda: population.train_population(cfgs, bad, dataset, mesh="members=1,data=3")),
        "too_many": refusal(lambda: population.train_population(cfgs, bad, dataset, mesh="members=4,data=2")),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
