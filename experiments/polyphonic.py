"""Polyphonic music likelihood bounds against the SRNN paper (Fraccaro et al. 2016, Table 1).

Trains a config (dvae_jax/configs/srnn_polyphonic_paper.json, vrnn_polyphonic.json) on one of the
four piano-roll sets with the SRNN code's protocol (ml/training/train_srnn_midi.py in
marcofraccaro/srnn): the training chunks in the files' order (no shuffling), 16 parallel streams
whose recurrent state is carried from one batch to the next (truncated backpropagation through
time; reset each epoch), the KL weight from 0.2 to 1 over ``train.kl_anneal_epochs`` (per batch),
Adam (eps 1e-4) after global-norm clipping. Validation ELBO every ``--eval-every`` epochs; the
final parameters (and the best on validation) are saved. Evaluation: the test ELBO and IWAE
bounds (dvae_jax/bounds.py) per time step with the paper's protocol and per sequence.

Usage (from the repository root; niced, one thread):
    python experiments/polyphonic.py train --config srnn_polyphonic_paper --set-name jsb \\
        --out runs/poly/srnn_jsb [--root ../shared/data/polyphonic] [--epochs 50] [--set k=v ...]
    python experiments/polyphonic.py evaluate --out runs/poly/srnn_jsb --k 1,10,100
    python experiments/polyphonic.py report runs/poly/*   # experiments/results/polyphonic.{md,json}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from dvae_jax import bounds, losses, models, schedules
from dvae_jax import config as config_lib
from dvae_jax.data import polyphonic

ADAM_EPS = 1e-4  # the SRNN code's lasagne.updates.adam(..., epsilon=1e-4)
KL_START = 0.2  # the SRNN code's tempKL_start


def paper_init(params: Any, key: jax.Array, gates: int = 4) -> Any:
    """The SRNN code's initialisation (MainSRNN_midi.py: init_mlp='normal', init_rnn='orthogonal'):
    dense kernels Glorot-normal, recurrent input and hidden weights orthogonal per gate, biases 0,
    in place of PyTorch's uniform default (models.init). Learned Student-t nu is kept."""
    glorot, ortho = jax.nn.initializers.glorot_normal(), jax.nn.initializers.orthogonal()
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    new = []
    for i, (path, a) in enumerate(leaves):
        name, k = str(getattr(path[-1], "key", path[-1])), jax.random.fold_in(key, i)
        if name == "kernel":
            a = glorot(k, a.shape, a.dtype)
        elif name in ("wi", "wh"):  # (in, gates x H): one orthogonal block per gate
            h = a.shape[1] // gates
            a = jnp.concatenate([ortho(jax.random.fold_in(k, g), (a.shape[0], h), a.dtype)
                                 for g in range(gates)], axis=1)
        elif name in ("bias", "bi", "bh"):
            a = jnp.zeros_like(a)
        new.append(a)
    return jax.tree_util.tree_unflatten(treedef, new)


def make_optimizer(cfg: config_lib.TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam with the configured (step-decayed) learning rate."""
    lr = schedules.learning_rate(cfg, steps_per_epoch, cfg.epochs * steps_per_epoch)
    opt = optax.adam(lr, eps=ADAM_EPS)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), opt) if cfg.clip_grad_norm > 0 else opt


def make_train_step(cfg: config_lib.Config, tx: optax.GradientTransformation, steps_per_epoch: int,
                    kl_start: float = KL_START):
    """``step(params, opt_state, carry, x, key, i) -> (params, opt_state, carry, metrics)``, jitted:
    the negative ELBO per frame of a batch that continues the previous one from ``carry``."""
    ramp = schedules.kl_weight(cfg.train, steps_per_epoch)

    def loss_fn(params, carry, x, key, i):
        out, carry = models.forward(cfg.model, params, x, key=key, deterministic=False, carry=carry)
        w = kl_start + (1.0 - kl_start) * ramp(i)
        loss, metrics = losses.elbo(cfg.model, out, x, kl_weight=w, beta=cfg.train.beta,
                                    free_bits=cfg.train.free_bits)
        return loss, (metrics, carry)

    @jax.jit
    def step(params, opt_state, carry, x, key, i):
        (_, (metrics, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, carry, x, key, i)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = dict(metrics, grad_norm=optax.tree_utils.tree_norm(grads))
        return optax.apply_updates(params, updates), opt_state, jax.lax.stop_gradient(carry), metrics

    return step


def save(out: Path, name: str, params: Any) -> None:
    tmp = out / f"{name}.msgpack.tmp"
    tmp.write_bytes(serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, params)))
    tmp.replace(out / f"{name}.msgpack")


def load_params(out: Path, name: str = "final") -> Any:
    return serialization.msgpack_restore((out / f"{name}.msgpack").read_bytes())


def train(cfg: config_lib.Config, out: Path, root: str, eval_every: int = 2, init: str = "paper",
          log=print) -> dict:
    """Trains ``cfg`` on its set; writes config.json, final/best params and history.json in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save_json(cfg, str(out / "config.json"))
    rolls = polyphonic.load(cfg.data.set_name, root)
    b = cfg.train.batch_size
    spe = len(rolls.x_train) // b
    tx = make_optimizer(cfg.train, spe)
    key = jax.random.PRNGKey(cfg.train.seed)
    k_init, k_train, k_eval = jax.random.split(key, 3)
    params = models.init(cfg.model, k_init)
    if init == "paper":
        params = paper_init(params, k_init, 3 if cfg.model.rnn_cell == "gru" else 4)
    opt_state = tx.init(params)
    model = models.build(cfg.model)
    step = make_train_step(cfg, tx, spe)
    history, best, t0, c0 = [], -np.inf, time.time(), time.process_time()
    for epoch in range(cfg.train.epochs):
        carry = model.initial_carry(model.params(params), b)  # the SRNN code resets every epoch
        stats = []
        for k, x in enumerate(polyphonic.train_batches(rolls.x_train, b)):
            i = epoch * spe + k
            params, opt_state, carry, m = step(params, opt_state, carry, jnp.asarray(x),
                                               jax.random.fold_in(k_train, i), i)
            stats.append([float(m["loss"]), float(m["recon"]), float(m["kl"])])
        row = dict(epoch=epoch + 1, seconds=round(time.time() - t0, 1),
                   cpu_seconds=round(time.process_time() - c0, 1),
                   **dict(zip(("train_loss", "train_recon", "train_kl"), np.mean(stats, 0).tolist())))
        if not np.isfinite(row["train_loss"]):
            raise RuntimeError(f"non-finite training loss at epoch {epoch + 1}")
        if (epoch + 1) % eval_every == 0 or epoch + 1 == cfg.train.epochs:
            v = bounds.evaluate_bounds(cfg.model, params, rolls.x_valid, None, 1, k_eval, chunk=128)
            row["valid_elbo_per_step"] = v["elbo_per_step"]
            if v["elbo_per_step"] > best:
                best = v["elbo_per_step"]
                save(out, "best", params)
        history.append(row)
        log(json.dumps(row))
        (out / "history.json").write_text(json.dumps(history, indent=1))
    save(out, "final", params)
    return {"epochs": cfg.train.epochs, "seconds": round(time.time() - t0, 1), "best_valid": best}


def evaluate(out: Path, root: str, ks: list[int], chunk: int, which: str = "final", seed: int = 0,
             pieces: int = 0, log=print) -> dict:
    """Test bounds of a trained run for each K, merged into ``out/bounds_<which>[_first<N>].json``
    after each K (``pieces``: only the first N test pieces, for a K too costly on all of them)."""
    cfg = config_lib.load_json(config_lib.Config, out / "config.json")
    rolls = polyphonic.load(cfg.data.set_name, root)
    params = load_params(out, which)
    x, mask = (rolls.x_test[:pieces], rolls.mask_test[:pieces]) if pieces else (rolls.x_test, rolls.mask_test)
    file = out / (f"bounds_{which}" + (f"_first{pieces}" if pieces else "") + ".json")
    res = json.loads(file.read_text()) if file.is_file() else {}
    for k in ks:
        t0, c0 = time.time(), time.process_time()
        r = bounds.evaluate_bounds(cfg.model, params, x, mask, k, jax.random.PRNGKey(seed), chunk=chunk)
        r.update(seconds=round(time.time() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1))
        res[str(k)] = r
        log(json.dumps(r))
        file.write_text(json.dumps(res, indent=1))
    return res


def _summary(run: Path) -> dict:
    """One row of the results: the run's set, model, epochs, times and test bounds per K."""
    cfg = json.loads((run / "config.json").read_text())
    hist = json.loads((run / "history.json").read_text())
    res = json.loads((run / "bounds_final.json").read_text())
    name = cfg["data"]["set_name"]
    last = hist[-1]
    return {
        "run": str(run), "set": name, "model": cfg["model"]["model"], "epochs": last["epoch"],
        "train_wall_s": last["seconds"], "train_cpu_s": last.get("cpu_seconds"),
        "valid_elbo_per_step": [h.get("valid_elbo_per_step") for h in hist if "valid_elbo_per_step" in h][-1],
        "paper_srnn_per_step": polyphonic.PAPER_SRNN[name],
        "bounds": res,
        "subsets": {f.stem.split("_")[-1]: json.loads(f.read_text())
                    for f in sorted(run.glob("bounds_final_first*.json"))},
        "history": [{k: h[k] for k in ("epoch", "train_kl", "valid_elbo_per_step") if k in h} for h in hist],
    }


def report(runs: list[Path], out: Path = ROOT / "experiments" / "results" / "polyphonic.json") -> str:
    """Writes the rows of ``runs`` to ``out`` (JSON) and returns the Markdown table."""
    rows = [_summary(r) for r in runs if (r / "bounds_final.json").is_file()]
    variants = [  # short diagnostic runs without test bounds: their training curves
        {"run": str(r), "config": json.loads((r / "config.json").read_text())["model"],
         "history": json.loads((r / "history.json").read_text())}
        for r in runs if not (r / "bounds_final.json").is_file() and (r / "history.json").is_file()]
    out.write_text(json.dumps({"results": rows, "variants": variants}, indent=1))
    ks = sorted({int(k) for r in rows for k in r["bounds"]})
    head = ["set", "model", "epochs", "train wall / CPU (s)", "ELBO (closed-form KL)"]
    head += [f"IWAE K={k}" for k in ks] + ["paper SRNN", "ELBO / IWAE per sequence"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        b = r["bounds"]
        first, top = b[str(ks[0])] if str(ks[0]) in b else next(iter(b.values())), b[str(max(int(k) for k in b))]
        iw = [f"{b[str(k)]['iwae_per_step']:.3f}" if str(k) in b else "-" for k in ks]
        lines.append("| " + " | ".join([
            r["set"], r["model"], str(r["epochs"]), f"{r['train_wall_s']:.0f} / {r['train_cpu_s'] or 0:.0f}",
            f"{first['elbo_per_step']:.3f}", *iw, f"{r['paper_srnn_per_step']:.2f}",
            f"{first['elbo_per_sequence']:.1f} / {top['iwae_per_sequence']:.1f}"]) + " |")
    table = "\n".join(lines)
    print(table)
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config", default="srnn_polyphonic_paper")
    t.add_argument("--set-name", default="jsb", choices=config_lib.POLYPHONIC_SETS)
    t.add_argument("--root", default="")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=2)
    t.add_argument("--set", action="append", default=[])
    t.add_argument("--init", default="paper", choices=("paper", "torch"),
                   help="paper: Glorot-normal / orthogonal / zero biases (the SRNN code); torch: models.init")
    e = sub.add_parser("evaluate")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--root", default="")
    e.add_argument("--k", default="1,10")
    e.add_argument("--chunk", type=int, default=256)
    e.add_argument("--which", default="final", choices=("final", "best"))
    e.add_argument("--pieces", type=int, default=0, help="only the first N test pieces (0 = all)")
    r = sub.add_parser("report")
    r.add_argument("runs", type=Path, nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "train":
        sets = [f"data.set_name={a.set_name}", f"data.root={a.root}", *a.set]
        sets += [f"train.epochs={a.epochs}"] if a.epochs else []
        cfg = config_lib.apply_overrides(config_lib.load_named(a.config), sets)
        print(json.dumps(train(cfg, a.out, a.root, a.eval_every, a.init)), flush=True)
    elif a.cmd == "evaluate":
        evaluate(a.out, a.root, [int(k) for k in a.k.split(",")], a.chunk, a.which, pieces=a.pieces)
    else:
        report(a.runs)


if __name__ == "__main__":
    main()
