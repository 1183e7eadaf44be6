"""``dvae-jax describe``: a model's layout and parameter count."""

from __future__ import annotations

import argparse
import dataclasses

from dvae_jax import config as config_lib
from dvae_jax.commands import _options


def register(subparsers) -> None:
    p = subparsers.add_parser("describe", help="print a model layout and its parameter count")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help=f"model preset: {', '.join(config_lib.MODEL_PRESETS)}")
    g.add_argument("--config", help="an experiment config name or JSON path (its model section)")
    _options.add_set(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import jax

    from dvae_jax import models

    if args.config:
        full = config_lib.apply_overrides(config_lib.load_named(args.config), args.set)
        cfg = full.model
        if full.data.corpus != "polyphonic":  # training sets x_dim from the features (fit.resolve_model)
            cfg = dataclasses.replace(cfg, x_dim=full.features.n_bins)
    else:
        model = config_lib.model_preset(args.preset or "vrnn_review_speech")
        cfg = config_lib.apply_overrides(config_lib.Config(model=model), args.set).model
    variables = models.init(cfg, jax.random.PRNGKey(0))
    print(f"model: {cfg.model.upper()}  x_dim {cfg.x_dim}  z_dim {cfg.z_dim}  activation {cfg.activation}  "
          f"prior {cfg.prior}  likelihood {cfg.likelihood}" + _extra(cfg))
    flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    width = max(len(jax.tree_util.keystr(p)) for p, _ in flat)
    for path, leaf in flat:
        print(f"  {jax.tree_util.keystr(path):<{width}}  {tuple(leaf.shape)!s:>12}  {leaf.size:>9,}")
    print(f"parameters: {models.count_params(variables)}")
    return 0


def _extra(cfg) -> str:
    """The model-specific switches worth a glance."""
    if cfg.model == "srnn":
        return f"  resq {cfg.resq}"
    if cfg.model == "rvae":
        return f"  bidir_g_x {cfg.bidir_g_x}  bidir_h {cfg.bidir_h} ({'non-' if cfg.bidir_h else ''}causal decoder)"
    if cfg.model == "dkf":
        return f"  bidir_gx {cfg.bidir_gx}"
    if cfg.model == "dsae":
        return f"  v_dim {cfg.v_dim}"
    return ""
