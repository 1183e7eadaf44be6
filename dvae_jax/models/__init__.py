"""The models: one module each (vrnn.py, srnn.py, vae.py, dkf.py, storn.py, rvae.py, dsae.py)
over a small shared base (base.py).

``build(cfg)`` returns the model object; ``init`` declares its parameters; ``forward`` is the
teacher-forced pass (dvae_jax/drivers.py), returning the outputs the ELBO needs and the final
carry. A new model is one module plus one line in ``REGISTRY``.

Parameter tree (names follow the review's modules; kernels are (in, out), i.e. transposed):
  VRNN: phi_x, phi_z, posterior (= mlp_hx_z + [inf_mean | inf_logvar]), prior (= mlp_h_z +
        [prior_mean | prior_logvar]), decoder (= mlp_hz_x + gen_out), rnn (layer0..).
  SRNN: mlp_x_h, rnn_h, mlp_hx_g, rnn_g, posterior (= mlp_gz_z + heads), prior (= mlp_hz_z +
        heads), decoder (= mlp_hz_x + gen_out).
  VAE:  posterior (= mlp_x_z + heads), decoder (= mlp_z_x + gen_out).
  DKF:  mlp_x_gx, rnn_gx [+ rnn_gx_reverse], mlp_ztm1_g (its last layer = linear_last),
        posterior (= mlp_g_z + heads), mlp_gate, mlp_z_prop, prior_mean, prior_logvar, decoder.
  STORN: mlp_x_g, rnn_g, posterior (= mlp_g_z + heads), mlp_z_h, mlp_xtm1_h, rnn_h, decoder.
  RVAE: mlp_x_gx, rnn_g_x [+ _reverse], mlp_z_gz, rnn_g_z, posterior (= mlp_g_z + heads), mlp_z_h,
        rnn_h [+ _reverse], decoder (= mlp_h_x + gen_out).
  DSAE: mlp_x, rnn_g_v + _reverse, posterior_v, mlp_xv_gxv, rnn_g_xv + _reverse, mlp_gxv_gz,
        rnn_g_z (tanh RNN), posterior_z, rnn_prior, prior, decoder (= mlp_vz_x + gen_out).
  Each model's review_names() maps its tree to the review's state_dict (docs/models.md).
  Student-t prior with learned nu: prior_nu, nu = 2 + softplus(prior_nu).
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax.config import ModelConfig
from dvae_jax.errors import ConfigError
from dvae_jax.models.base import (  # noqa: F401  (the public names of the models package)
    DVAE,
    Outputs,
    decode_frames,
    decoder_out,
    decoder_out_dim,
    prior_nu,
)

# model.model -> "module:Class" of dvae_jax.models, imported when first built.
REGISTRY: dict[str, str] = {
    "vrnn": "vrnn:VRNN", "srnn": "srnn:SRNN", "vae": "vae:VAE", "dkf": "dkf:DKF",
    "storn": "storn:STORN", "rvae": "rvae:RVAE", "dsae": "dsae:DSAE",
}


def model_class(name: str) -> type[DVAE]:
    """The class of model ``name`` (one line naming model.model when unknown)."""
    if name not in REGISTRY:
        raise ConfigError(f"model.model={name!r}: must be one of {sorted(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"dvae_jax.models.{module}"), cls)


def build(cfg: ModelConfig) -> DVAE:
    """The model ``cfg.model`` names, checked against its options."""
    return model_class(cfg.model)(cfg)


def noise_dim(cfg: ModelConfig) -> int:
    """Standard noise entries per frame the model's passes take (z_dim; DSAE: z_dim + v_dim)."""
    return model_class(cfg.model).noise_dim(cfg)


def init(cfg: ModelConfig, key: Array, seq_len: int = 4, batch: int = 1) -> dict:
    """Fresh parameters: the Flax variables dict {'params': ...}, by ``cfg.init``: 'torch'
    (PyTorch's uniform default, base.DVAE.init) or 'paper' (:func:`paper_init` over it, same key).
    (``seq_len`` and ``batch`` are kept for callers of the earlier API; declaration does not need
    data.)"""
    variables = build(cfg).init(key)
    if cfg.init == "paper":
        return paper_init(variables, key)
    if cfg.init != "torch":
        raise ConfigError(f"model.init={cfg.init!r}: must be torch or paper")
    return variables


def paper_init(variables: Any, key: Array) -> Any:
    """The SRNN code's initialisation (MainSRNN_midi.py: init_mlp='normal', init_rnn='orthogonal'):
    every dense kernel Glorot-normal, the recurrences' input and hidden weights orthogonal per gate
    (one (in, H) block for each gate: i, f, g, o of an LSTM, r, z, n of a GRU, the one of an Elman
    RNN; the layer's wh (H, gates x H) says how many), every bias 0. Other leaves (a learned
    Student-t nu) keep their value. Leaf i draws from fold_in(key, i) in the tree's flattening order."""
    glorot, ortho = jax.nn.initializers.glorot_normal(), jax.nn.initializers.orthogonal()
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    gate_counts = {tuple(path[:-1]): a.shape[1] // a.shape[0] for path, a in leaves
                   if str(getattr(path[-1], "key", path[-1])) == "wh"}
    new = []
    for i, (path, a) in enumerate(leaves):
        name, k = str(getattr(path[-1], "key", path[-1])), jax.random.fold_in(key, i)
        if name == "kernel":
            a = glorot(k, a.shape, a.dtype)
        elif name in ("wi", "wh"):  # (in, gates x H): one orthogonal block per gate
            gates = gate_counts[tuple(path[:-1])]
            h = a.shape[1] // gates
            a = jnp.concatenate([ortho(jax.random.fold_in(k, g), (a.shape[0], h), a.dtype)
                                 for g in range(gates)], axis=1)
        elif name in ("bias", "bi", "bh"):
            a = jnp.zeros_like(a)
        new.append(a)
    return jax.tree_util.tree_unflatten(treedef, new)


def count_params(variables: Any) -> int:
    return int(sum(a.size for a in jax.tree_util.tree_leaves(variables)))


def forward(
    cfg: ModelConfig,
    variables: Any,
    x: Float[Array, "b t f"],
    eps: Float[Array, "b t z"] | None = None,
    key: Array | None = None,
    *,
    deterministic: bool = True,
    carry: Any = None,
    lengths: Array | None = None,
) -> tuple[Outputs, Any]:
    """The teacher-forced pass: ``(Outputs, final carry)``.

    Args:
        cfg: the model's configuration.
        variables: Flax variables {'params': ...}.
        x: frames in the model's input space.
        eps: the posterior's N(0, I) noise (b, t, noise_dim(cfg)); drawn from ``key`` when None.
        key: PRNG key for ``eps`` (when None) and, unless ``deterministic``, dropout.
        deterministic: no dropout.
        carry: the state before the first frame (None: a cold start).
        lengths: (b,) real frames per row of a batch padded at the end (see
            drivers.teacher_forced); None: every frame is real.
    """
    from dvae_jax import drivers  # drivers import the base of this package

    k_eps = k_drop = None
    if key is not None:
        k_eps, k_drop = jax.random.split(key)
    if eps is None:
        if k_eps is None:
            raise ValueError("models.forward needs eps or key")
        eps = jax.random.normal(k_eps, (*x.shape[:2], noise_dim(cfg)), x.dtype)
    return drivers.teacher_forced(
        build(cfg), variables, x, eps, carry, dropout_key=None if deterministic else k_drop, lengths=lengths
    )
