"""VRNN and SRNN: Flax modules that hoist all non-recurrent work out of their scans.

Both take x (b, t, f) and, optionally, the reparameterisation noise eps (b, t, z) (drawn from
the 'sample' stream when omitted) and return :class:`Outputs`, batch-major. Internally arrays
are time-major so that scans run over the leading axis.

Parameter tree (names follow the review's modules; kernels are (in, out), i.e. transposed):
  VRNN: phi_x, phi_z, posterior (= mlp_hx_z + [inf_mean | inf_logvar]), prior (= mlp_h_z +
        [prior_mean | prior_logvar]), decoder (= mlp_hz_x + gen_out), rnn (layer0..).
  SRNN: mlp_x_h, rnn_h, mlp_hx_g, rnn_g, posterior (= mlp_gz_z + heads), prior (= mlp_hz_z +
        heads), decoder (= mlp_hz_x + gen_out).
  Student-t prior with learned nu: prior_nu/raw, nu = 2 + softplus(raw).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from dvae_jax import cells, layers
from dvae_jax.config import ModelConfig
from dvae_jax.typing import Array


class Outputs(NamedTuple):
    """Everything the ELBO needs, batch-major (b, t, ...)."""

    z: Array  # posterior sample
    mean_q: Array
    logvar_q: Array
    prior_loc: Array  # Gaussian mean or Student-t location
    prior_logvar: Array  # log-variance (Gaussian) or 2 log scale (Student-t)
    x_out: Array  # decoder output: IS log-variance (f), or Gaussian mean (f) [+ log-variance (f)]
    nu: Array | None  # Student-t degrees of freedom (z,), None for a Gaussian prior


def decoder_out_dim(cfg: ModelConfig) -> int:
    if cfg.likelihood == "itakura_saito":
        return cfg.x_dim
    if cfg.likelihood == "gaussian":
        return 2 * cfg.x_dim if cfg.learn_x_var else cfg.x_dim
    raise ValueError(f"model.likelihood must be 'itakura_saito' or 'gaussian', got '{cfg.likelihood}'")


def _check(cfg: ModelConfig) -> None:
    if cfg.prior not in ("gaussian", "student_t"):
        raise ValueError(f"model.prior must be 'gaussian' or 'student_t', got '{cfg.prior}'")
    if cfg.kl_estimator not in ("mc", "entropy"):
        raise ValueError(f"model.kl_estimator must be 'mc' or 'entropy', got '{cfg.kl_estimator}'")
    if cfg.prior == "student_t" and cfg.nu <= 0:
        raise ValueError(f"model.nu must be > 0 (> 2 for finite variance), got {cfg.nu}")
    layers.activation(cfg.activation)
    decoder_out_dim(cfg)


def _heads(a: Array, z_dim: int, clip: float) -> tuple[Array, Array]:
    return a[..., :z_dim], a[..., z_dim:].clip(-clip, clip)


def _decoder_out(cfg: ModelConfig, a: Array) -> Array:
    if cfg.likelihood == "itakura_saito":
        return a.clip(-cfg.logvar_clip, cfg.logvar_clip)
    if cfg.learn_x_var:
        return jnp.concatenate(
            [a[..., : cfg.x_dim], a[..., cfg.x_dim :].clip(-cfg.logvar_clip, cfg.logvar_clip)], -1
        )
    return a


class _Base(nn.Module):
    cfg: ModelConfig

    def nu(self) -> Array | None:
        cfg = self.cfg
        if cfg.prior != "student_t":
            return None
        if not cfg.learn_nu:
            return jnp.full((cfg.z_dim,), cfg.nu)
        init_raw = math.log(math.expm1(max(cfg.nu - 2.0, 1e-3)))  # softplus^-1(nu - 2)
        raw = self.param("prior_nu", lambda k, s: jnp.full(s, init_raw, jnp.float32), (cfg.z_dim,))
        return 2.0 + jax.nn.softplus(raw)

    def noise(self, eps: Array | None, shape: tuple[int, ...], dtype) -> Array:
        if eps is not None:
            return eps
        return jax.random.normal(self.make_rng("sample"), shape, dtype)

    def dropout_fn(self, deterministic: bool):
        if self.cfg.dropout_p <= 0.0 or deterministic:
            return None
        drop = nn.Dropout(self.cfg.dropout_p, deterministic=False)
        return lambda x: drop(x)

    def step_kwargs(self, deterministic: bool) -> dict:
        cfg = self.cfg
        return dict(
            activation=cfg.activation, z_dim=cfg.z_dim, logvar_clip=cfg.logvar_clip,
            dropout_p=cfg.dropout_p, deterministic=deterministic,
        )

    def scan(self, step_cls, name: str, reverse: bool = False, **kwargs):
        return cells.scanned(step_cls, name=name, unroll=self.cfg.unroll, reverse=reverse, **kwargs)


def run_lstm(module: _Base, ps: list, inputs: Array, name: str, reverse: bool = False) -> Array:
    """Stacked LSTM over known inputs (t, b, in), layer by layer: each layer's input projection is
    one batched matmul over all frames; only h W_h stays in the scan."""
    t_len, batch = inputs.shape[:2]
    x = inputs
    for i, p in enumerate(ps):
        hidden = p["wh"].shape[0]
        zeros = jnp.zeros((batch, hidden), inputs.dtype)
        scan = module.scan(cells.LSTMStep, f"{name}_scan{i}", reverse=reverse)
        _, x = scan((zeros, zeros), layers.lstm_input_projection(p, x), p["wh"])
    return x


class VRNN(_Base):
    """Variational RNN (Chung et al. 2015) in the review's formulation (MODELS.md)."""

    @nn.compact
    def __call__(self, x: Array, eps: Array | None = None, deterministic: bool = True) -> Outputs:
        cfg = self.cfg
        _check(cfg)
        act = layers.activation(cfg.activation)
        drop = self.dropout_fn(deterministic)
        d_x = cfg.dense_x[-1] if cfg.dense_x else cfg.x_dim
        d_z = cfg.dense_z[-1] if cfg.dense_z else cfg.z_dim
        H = cfg.dim_rnn
        p_phi_x = layers.MLP((cfg.x_dim, *cfg.dense_x), name="phi_x")()
        p_phi_z = layers.MLP((cfg.z_dim, *cfg.dense_z), name="phi_z")()
        p_post = layers.MLP((d_x + H, *cfg.dense_hx_z, 2 * cfg.z_dim), name="posterior")()
        p_prior = layers.MLP((H, *cfg.dense_h_z, 2 * cfg.z_dim), name="prior")()
        p_dec = layers.MLP((d_z + H, *cfg.dense_hz_x, decoder_out_dim(cfg)), name="decoder")()
        p_rnn = layers.LSTM(d_x + d_z, H, cfg.num_rnn, name="rnn")()
        nu = self.nu()

        batch, t_len = x.shape[:2]
        tm = lambda a: jnp.swapaxes(a, 0, 1)  # (b, t, .) <-> (t, b, .)
        eps_t = tm(self.noise(eps, (batch, t_len, cfg.z_dim), x.dtype))

        # Everything that depends on x only: one matmul each over all frames. The wide layers
        # (x in, x out) run batch-major so that only their narrow sides are transposed.
        phi_x = tm(layers.mlp(p_phi_x, x, act, dropout=drop))  # (t, b, d_x)
        post0_x, post0_h = layers.first_layer_split(p_post[0], d_x)
        lstm0 = p_rnn[0]
        weights = {
            "post_h": post0_h,
            "post_rest": p_post[1:],
            "phi_z": p_phi_z,
            "lstm_wz": lstm0["wi"][d_x:],
            "lstm": p_rnn,
        }
        if cfg.num_rnn == 1:
            weights["h_cat"] = jnp.concatenate([post0_h, lstm0["wh"]], axis=1)
        xs = {
            "pre_post": layers.dense(post0_x, phi_x),
            "pre_lstm": phi_x @ lstm0["wi"][:d_x] + (lstm0["bi"] + lstm0["bh"]),
            "eps": eps_t,
        }
        zeros = tuple(jnp.zeros((batch, H), x.dtype) for _ in range(cfg.num_rnn))
        scan = self.scan(cells.VRNNStep, "cell", **self.step_kwargs(deterministic))
        _, out = scan((zeros, zeros), xs, weights)

        # Prior from the stored states and decoder: batched over all frames, batch-major.
        dec_in = tm(jnp.concatenate([out["phi_z"], out["h"]], axis=-1))  # (b, t, d_z + H)
        prior_loc, prior_logvar = _heads(
            layers.mlp(p_prior, dec_in[..., d_z:], act, final_act=False, dropout=drop),
            cfg.z_dim, cfg.logvar_clip,
        )
        x_out = _decoder_out(cfg, layers.mlp(p_dec, dec_in, act, final_act=False, dropout=drop))
        return Outputs(
            tm(out["z"]), tm(out["mean_q"]), tm(out["logvar_q"]), prior_loc, prior_logvar, x_out, nu,
        )


class SRNN(_Base):
    """Stochastic RNN (Fraccaro et al. 2016) in the review's formulation, optional Resq."""

    @nn.compact
    def __call__(self, x: Array, eps: Array | None = None, deterministic: bool = True) -> Outputs:
        cfg = self.cfg
        _check(cfg)
        act = layers.activation(cfg.activation)
        drop = self.dropout_fn(deterministic)
        H, G, Z = cfg.dim_rnn, cfg.dim_rnn_g, cfg.z_dim
        d_xh = cfg.dense_x_h[-1] if cfg.dense_x_h else cfg.x_dim
        d_hxg = cfg.dense_hx_g[-1] if cfg.dense_hx_g else H + cfg.x_dim
        p_x_h = layers.MLP((cfg.x_dim, *cfg.dense_x_h), name="mlp_x_h")()
        p_rnn_h = layers.LSTM(d_xh, H, cfg.num_rnn, name="rnn_h")()
        p_hx_g = layers.MLP((H + cfg.x_dim, *cfg.dense_hx_g), name="mlp_hx_g")()
        p_rnn_g = layers.LSTM(d_hxg, G, cfg.num_rnn, name="rnn_g")()
        p_post = layers.MLP((G + Z, *cfg.dense_gz_z, 2 * Z), name="posterior")()
        p_prior = layers.MLP((H + Z, *cfg.dense_hz_z, 2 * Z), name="prior")()
        p_dec = layers.MLP((H + Z, *cfg.dense_hz_x, decoder_out_dim(cfg)), name="decoder")()
        nu = self.nu()

        batch, t_len = x.shape[:2]
        tm = lambda a: jnp.swapaxes(a, 0, 1)  # (b, t, .) <-> (t, b, .)
        eps_t = tm(self.noise(eps, (batch, t_len, Z), x.dtype))

        # Deterministic paths: forward h_t from x_{t-1}, backward g_t from [h_t, x_t]. The layers
        # fed by x run batch-major, so only their narrow outputs are transposed; MLP_x_h is
        # applied per frame, so MLP_x_h(x_{t-1}) is MLP_x_h(x) shifted by one frame, with
        # MLP_x_h(0) first.
        a = layers.mlp(p_x_h, x, act, dropout=drop)
        a0 = layers.mlp(p_x_h, jnp.zeros_like(x[:, :1]), act, dropout=drop)
        a_prev = tm(jnp.concatenate([a0, a[:, :-1]], axis=1))
        h = run_lstm(self, p_rnn_h, a_prev, "rnn_h")
        if cfg.dense_hx_g:
            hx0_h, hx0_x = layers.first_layer_split(p_hx_g[0], H)
            pre = tm(x @ hx0_x) + layers.dense(hx0_h, h)  # [h, x] W = h W_h + x W_x
            hx = layers.mlp(p_hx_g, act(pre) if drop is None else drop(act(pre)), act, dropout=drop, start=1)
        else:
            hx = jnp.concatenate([h, tm(x)], -1)
        g = run_lstm(self, p_rnn_g, hx, "rnn_g", reverse=True)

        # The latent chain: only z_{t-1}'s share of each first layer stays in the scan.
        post0_g, post0_z = layers.first_layer_split(p_post[0], G)
        prior0_h, prior0_z = layers.first_layer_split(p_prior[0], H)
        weights = {"post_z": post0_z, "post_rest": p_post[1:]}
        xs = {"pre_post": layers.dense(post0_g, g), "eps": eps_t}
        if cfg.resq:
            weights.update(prior_z=prior0_z, prior_rest=p_prior[1:])
            xs["pre_prior"] = layers.dense(prior0_h, h)
        scan = self.scan(cells.SRNNLatentStep, "cell", resq=cfg.resq, **self.step_kwargs(deterministic))
        _, out = scan(jnp.zeros((batch, Z), x.dtype), xs, weights)

        # Prior and decoder batch-major: the decoder's wide output needs no transpose.
        z = out["z"]
        z_prev = jnp.concatenate([jnp.zeros_like(z[:1]), z[:-1]], axis=0)
        hz = tm(jnp.concatenate([h, z_prev, z], -1))  # (b, t, H + 2Z)
        h_b, z_prev_b, z_b = hz[..., :H], hz[..., H:H + Z], hz[..., H + Z:]
        prior_loc, prior_logvar = _heads(
            layers.mlp(p_prior, jnp.concatenate([h_b, z_prev_b], -1), act, final_act=False, dropout=drop),
            Z, cfg.logvar_clip,
        )
        x_out = _decoder_out(
            cfg, layers.mlp(p_dec, jnp.concatenate([h_b, z_b], -1), act, final_act=False, dropout=drop)
        )
        return Outputs(
            z_b, tm(out["mean_q"]), tm(out["logvar_q"]), prior_loc, prior_logvar, x_out, nu,
        )


def build(cfg: ModelConfig) -> nn.Module:
    if cfg.model == "vrnn":
        return VRNN(cfg)
    if cfg.model == "srnn":
        return SRNN(cfg)
    raise ValueError(f"model.model must be 'vrnn' or 'srnn', got '{cfg.model}'")


def init(cfg: ModelConfig, key: Array, seq_len: int = 4, batch: int = 1):
    """Initialises parameters; returns the Flax variables dict {'params': ...}."""
    x = jnp.ones((batch, seq_len, cfg.x_dim), jnp.float32)
    eps = jnp.zeros((batch, seq_len, cfg.z_dim), jnp.float32)
    return jax.jit(build(cfg).init)({"params": key}, x, eps)


def count_params(variables) -> int:
    return int(sum(a.size for a in jax.tree_util.tree_leaves(variables)))


def forward(cfg: ModelConfig, variables, x: Array, eps: Array | None = None, key: Array | None = None,
            *, deterministic: bool = True):
    """The teacher-forced pass: ``(Outputs, final carry)``. ``eps`` (b, t, z) or ``key`` supplies
    the posterior noise; ``key`` also drives dropout when ``deterministic`` is False."""
    rngs = None
    if key is not None:
        k_eps, k_drop = jax.random.split(key)
        rngs = {"sample": k_eps, "dropout": k_drop}
    out = build(cfg).apply(variables, x, eps, deterministic=deterministic, rngs=rngs)
    return out, None
