"""STORN (Bayer & Osendorfer 2014) in the DVAE review's formulation (dvae/model/storn.py).

Posterior q(z_t | x_{1:t}): g_t = LSTM_g(MLP_x_g(x_t), g_{t-1}) (forward in time), [mean |
logvar] = heads(MLP_g_z(g_t)); it never reads z_{<t}. Prior p(z_t) = N(0, I) (standard
Student-t with a Student-t prior). Decoder: h_t = LSTM_h([MLP_z_h(z_t), MLP_xtm1_h(x_{t-1})],
h_{t-1}) (concatenation z first, x_0 = 0), y_t = gen_out(MLP_h_x(h_t)): the previous frame
feeds the decoder's recurrence, so generation feeds each decoded frame back.

Teacher forcing: the posterior (LSTM_g and the heads) and MLP_xtm1_h(x_{t-1}) are data only and
run before the scan, batched; the scan only samples z_t; LSTM_h, which needs every z_t, runs
after it in ``finish`` (batched, from the carry's state), then the decoder. Free running and
scheduled sampling step LSTM_h in ``absorb`` with the frame fed back. Carry: (LSTM_h's state,
x_{t-1}): the generative state only. LSTM_g starts from zero at every pass, as the review's
runs each whole sequence, so a pass continued from a carry (priming, data.batching=streams)
infers z from that pass's frames alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax.config import ModelConfig
from dvae_jax.errors import ConfigError
from dvae_jax.models import base, cudnn_lstm, matmul
from dvae_jax.models.base import LSTM, MLP, Dropout, Latent, LSTMState


class Params(NamedTuple):
    """STORN parameters (the review's module names; heads fused, gen_out in ``decoder``)."""

    mlp_x_g: MLP
    rnn_g: LSTM
    posterior: MLP  # mlp_g_z + [inf_mean | inf_logvar]
    mlp_z_h: MLP
    mlp_xtm1_h: MLP
    rnn_h: LSTM
    decoder: MLP  # mlp_h_x + gen_out


class Carry(NamedTuple):
    state: LSTMState  # LSTM_h after h_{t-1}
    x_prev: Float[Array, "b f"]  # x_{t-1}


class Data(NamedTuple):
    """Per-step inputs from the real frames (t, b, ...)."""

    mean_q: Float[Array, "t b z"] | None  # the posterior (None when the prior is sampled)
    logvar_q: Float[Array, "t b z"] | None
    xh: Float[Array, "t b d"]  # MLP_xtm1_h(x_{t-1}), carried to ``finish``
    frame: Float[Array, "t b f"]  # x_t


class Ctx(NamedTuple):
    xh: Float[Array, "b d"] | None  # teacher forcing: MLP_xtm1_h(x_{t-1}) for ``finish``
    h: Float[Array, "b h"] | None  # stepped: LSTM_h's top h_t, read by ``emit``


class STORN(base.DVAE):
    name = "storn"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        for key in ("resq", "share_x_embedding"):  # SRNN's options: nothing to apply them to
            if getattr(cfg, key):
                raise ConfigError(f"model.{key}=true is an SRNN option STORN has no counterpart for; "
                                  f"set it to false with model.model=storn")

    def dims(self) -> tuple[int, int, int]:
        """Widths of MLP_x_g(x), MLP_z_h(z) and MLP_xtm1_h(x) (an empty MLP is the identity)."""
        cfg = self.cfg
        d_xg = cfg.dense_x_g[-1] if cfg.dense_x_g else cfg.x_dim
        d_zh = cfg.dense_z_h[-1] if cfg.dense_z_h else cfg.z_dim
        d_xh = cfg.dense_xtm1_h[-1] if cfg.dense_xtm1_h else cfg.x_dim
        return d_xg, d_zh, d_xh

    def layout(self):
        cfg = self.cfg
        d_xg, d_zh, d_xh = self.dims()
        return (
            ("mlp_x_g", ("mlp", (cfg.x_dim, *cfg.dense_x_g))),
            ("rnn_g", ("lstm", d_xg, cfg.dim_rnn_g, cfg.num_rnn_g, cfg.rnn_cell)),
            *base.head_layout("posterior", (cfg.dim_rnn_g, *cfg.dense_g_z, 2 * cfg.z_dim), cfg.separate_heads),
            ("mlp_z_h", ("mlp", (cfg.z_dim, *cfg.dense_z_h))),
            ("mlp_xtm1_h", ("mlp", (cfg.x_dim, *cfg.dense_xtm1_h))),
            ("rnn_h", ("lstm", d_zh + d_xh, cfg.dim_rnn_h, cfg.num_rnn_h, cfg.rnn_cell)),
            ("decoder", ("mlp", (cfg.dim_rnn_h, *cfg.dense_h_x, base.decoder_out_dim(cfg)))),
        )

    def review_names(self) -> list:
        """The review's state_dict names of this layout (dvae_jax/interop.py)."""
        from dvae_jax import interop as io

        cfg = self.cfg
        return (
            io.mlp_entries("mlp_x_g", "mlp_x_g", len(cfg.dense_x_g))
            + io.lstm_entries("rnn_g", "rnn_g", cfg.num_rnn_g)
            + io.heads_entries("mlp_g_z", ("inf_mean", "inf_logvar"), "posterior", len(cfg.dense_g_z))
            + io.mlp_entries("mlp_z_h", "mlp_z_h", len(cfg.dense_z_h))
            + io.mlp_entries("mlp_xtm1_h", "mlp_xtm1_h", len(cfg.dense_xtm1_h))
            + io.lstm_entries("rnn_h", "rnn_h", cfg.num_rnn_h)
            + io.single_out_entries("mlp_h_x", "gen_out", "decoder", len(cfg.dense_h_x))
        )

    def params(self, variables: Any) -> Params:
        P = base.params_tree(variables)
        return matmul.cast_kernels(Params(
            base.read_mlp(P.get("mlp_x_g")), base.read_lstm(P["rnn_g"]), base.read_heads(P, "posterior"),
            base.read_mlp(P.get("mlp_z_h")), base.read_mlp(P.get("mlp_xtm1_h")), base.read_lstm(P["rnn_h"]),
            base.read_mlp(P.get("decoder")),
        ), self.cfg.matmul_dtype)

    def initial_carry(self, p: Params, n: int, dtype=jnp.float32) -> Carry:
        cfg = self.cfg
        return Carry(base.lstm_zeros(n, cfg.dim_rnn_h, cfg.num_rnn_h, dtype), jnp.zeros((n, cfg.x_dim), dtype))

    def _run(self, layers: LSTM, inputs: Float[Array, "t b i"],
             state: LSTMState | None = None) -> tuple[Array, LSTMState]:
        return cudnn_lstm.maybe_run_lstm(layers, inputs, state, impl=self.cfg.lstm_impl, unroll=self.cfg.unroll)

    def hoist(self, p: Params, x: Float[Array, "b t f"], carry: Carry, drop: Dropout,
              need_prior: bool, lengths=None) -> tuple[Data, None]:
        cfg = self.cfg
        # MLP_xtm1_h reads x_{t-1}: the frames shifted by one, the carry's x_{t-1} first (x_0 = 0
        # at a cold start). The MLPs run batch-major; only their narrow outputs are transposed.
        x_tm1 = jnp.concatenate([carry.x_prev[:, None].astype(x.dtype), x[:, :-1]], axis=1)
        xh = base.time_major(base.mlp(p.mlp_xtm1_h, x_tm1, self.act, drop=drop))
        mean = logvar = None
        if not need_prior:  # the posterior reads the data only: all of it here, batched
            g, _ = self._run(p.rnn_g, base.time_major(base.mlp(p.mlp_x_g, x, self.act, drop=drop)))
            a = base.mlp(p.posterior, g, self.act, final_act=False, drop=drop)
            mean, logvar = base.heads(a, cfg.z_dim, cfg.logvar_clip)
        return Data(mean, logvar, xh, base.time_major(x)), None

    def enter(self, p: Params, carry: Carry, data: Data | None, hoisted: bool,
              drop: Dropout) -> tuple[Carry, Ctx]:
        return carry, Ctx(data.xh if hoisted else None, None)

    def latent(self, p: Params, carry: Carry, ctx: Ctx, data: Data | None, noise: Array,
               posterior: bool, temperature, drop: Dropout) -> Latent:
        if posterior:
            return Latent(base.sample_posterior(data.mean_q, data.logvar_q, noise), data.mean_q, data.logvar_q)
        return Latent(temperature * noise)  # the standard prior: loc 0, scale 1

    def absorb(self, p: Params, carry: Carry, ctx: Ctx, zf: Array, hoisted: bool,
               drop: Dropout) -> tuple[Carry, Ctx]:
        if hoisted:  # teacher forcing: LSTM_h runs over all frames in ``finish``
            return carry, ctx
        zh = base.mlp(p.mlp_z_h, zf, self.act, drop=drop)
        xh = base.mlp(p.mlp_xtm1_h, carry.x_prev, self.act, drop=drop)
        pre0 = base.lstm_input(p.rnn_h[0], jnp.concatenate([zh, xh], -1))
        state = base.lstm_step(p.rnn_h, carry.state, pre0)
        return carry._replace(state=state), Ctx(None, state.h[-1])

    def emit(self, p: Params, ctx: Ctx, zf: Array, drop: Dropout) -> Array:
        return base.decoder_out(self.cfg, base.mlp(p.decoder, ctx.h, self.act, final_act=False, drop=drop))

    def frame_in(self, p: Params, x: Array, drop: Dropout) -> Array:
        return x  # the frame itself: MLP_xtm1_h reads it at the next step

    def leave(self, p: Params, carry: Carry, ctx: Ctx, zf: Array, frame: Array, drop: Dropout) -> Carry:
        return carry._replace(x_prev=frame)

    def record(self, ctx: Ctx, zf: Array) -> Array | None:
        return ctx.xh

    def finish(self, p: Params, rec, z, carry0: Carry, drop: Dropout, x_out=None, lengths=None):
        cfg = self.cfg
        zeros = jnp.zeros(z.shape[1::-1] + z.shape[2:], z.dtype)  # (b, t, z): N(0, I)
        if x_out is not None:  # LSTM_h was stepped in the scan, which decoded every frame
            return zeros, zeros, base.time_major(x_out), None
        # [MLP_z_h(z_t), MLP_xtm1_h(x_{t-1})] of every frame: one input product, LSTM_h's scan
        # holds h W_h only (and, with model.lstm_impl=cudnn, runs in cuDNN).
        zh = base.mlp(p.mlp_z_h, z, self.act, drop=drop)
        h, end = self._run(p.rnn_h, jnp.concatenate([zh, rec.astype(zh.dtype)], -1), carry0.state)
        dec = base.mlp(p.decoder, base.time_major(h), self.act, final_act=False, drop=drop)
        return zeros, zeros, base.decoder_out(cfg, dec), end

    def close(self, carry: Carry, aux: Any, hoisted: bool, end: LSTMState | None = None) -> Carry:
        # Teacher forcing: the scan kept x_{t-1} and LSTM_h's final state comes from ``finish``.
        return carry if end is None else carry._replace(state=end)
