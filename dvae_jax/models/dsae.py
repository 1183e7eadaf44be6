"""DSAE (Li & Mandt 2018, "Disentangled Sequential Autoencoder") in the DVAE review's formulation
(dvae/model/dsae.py of XiaoyuBIE1994/DVAE; docs/models.md).

Two latents: v (b, v), one per sequence ("content"), and z_t per frame ("dynamics").
  features f_t = MLP_x(x_t);
  q(v | x_{1:T}): s = [h_T of the forward rnn_g_v, h_1 of its backward direction] over f (the
      top layer's final states), MLP_gv_v(s), heads [mean | log-variance]; p(v) = N(0, I);
  q(z_t | x_{1:T}, v): g = BiLSTM_g_xv(MLP_xv_gxv([f_t, v])) (x first, v at every frame),
      r_t = RNN_g_z(MLP_gxv_gz(g_t)) a forward tanh Elman recurrence, heads on r_t: z_t does not
      read z_{<t}, so every posterior product is data-only;
  p(z_t | z_{<t}): q_t = LSTM_prior(z_{t-1}) (z_0 = 0, zero state), linear heads on q_t (Gaussian,
      or a Student-t location and 2 log scale);
  p(x_t | v, z_t): gen_out(MLP_vz_x([v, z_t])) (v first): no recurrence reads a frame
      (``feeds_back_x = False``).
Teacher forcing: v (``sequence``) then the whole z posterior are hoisted, the scan only draws
z_t = mean + std * eps, and ``finish`` runs LSTM_prior over [z_prev, z_{1:T-1}] and the decoder,
batched. When the prior is sampled (generation, ``latent='prior'``) ``enter`` steps LSTM_prior
on the carry's z_{t-1}.

Carry: (v, LSTM_prior's state, z_{t-1}, has_v). A primed continuation keeps the prime's
posterior v (sampled once; "the same content") and continues the prior chain from LSTM_prior's
state after [0, z_1, ..., z_{P-1}] and z_P; the prime's posterior is the smoothing posterior of
the prime alone (both bidirectional recurrences see x_{1:P} only). A pass from the prior over a
carry that already holds a v (``has_v``) keeps that v; a posterior pass always infers v from its
own frames. With dropout, MLP_x's masks of the v path and of the z path are drawn separately
(the review applies MLP_x once and shares them); the speech preset has no MLP_x.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from dvae_jax.errors import ConfigError
from dvae_jax.models import base, matmul
from dvae_jax.models.base import LSTM, MLP, Dropout, Latent, Linear, LSTMState


class Params(NamedTuple):
    """DSAE parameters (the review's module names; fused heads), decoder's first layer split."""

    mlp_x: MLP
    rnn_g_v: LSTM
    rnn_g_v_reverse: LSTM
    posterior_v: MLP  # mlp_gv_v + [inf_v_mean | inf_v_logvar]
    mlp_xv_gxv: MLP
    rnn_g_xv: LSTM
    rnn_g_xv_reverse: LSTM
    mlp_gxv_gz: MLP
    rnn_g_z: LSTM  # tanh Elman layers (nn.RNN)
    posterior_z: MLP  # [inf_z_mean | inf_z_logvar]
    rnn_prior: LSTM
    prior: MLP  # [prior_mean | prior_logvar]
    decoder: MLP  # mlp_vz_x + gen_out
    dec_v: Linear  # the decoder's first layer, v part (bias in): once per sequence
    dec_z: Float[Array, "z d"]  # ... and its z_t part


class Carry(NamedTuple):
    v: Float[Array, "b v"]  # the sequence-level latent
    prior: LSTMState  # LSTM_prior after reading z_{t-2}
    z_prev: Float[Array, "b z"]  # z_{t-1}
    has_v: Bool[Array, " b"]  # v was drawn (False at a cold start, before ``sequence``)


class Data(NamedTuple):
    """The hoisted posterior of every frame (t, b, z); None when the prior is sampled."""

    mean: Float[Array, "t b z"] | None
    logvar: Float[Array, "t b z"] | None
    frame: None = None  # no recurrence reads a frame


class Ctx(NamedTuple):
    v: Float[Array, "b v"]
    loc: Float[Array, "b z"] | None  # the prior of this frame, when LSTM_prior was stepped
    logvar: Float[Array, "b z"] | None


class DSAE(base.DVAE):
    name = "dsae"
    feeds_back_x = False
    review_cells_only = True

    @classmethod
    def noise_dim(cls, cfg) -> int:
        return cfg.z_dim + cfg.v_dim

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.lstm_impl == "cudnn":
            raise ConfigError("model.lstm_impl='cudnn': DSAE's recurrences run on the scan only; "
                              "set model.lstm_impl=scan or auto")

    def dims(self) -> tuple[int, int, int]:
        """(features of x, input of rnn_g_xv, input of rnn_g_z)."""
        cfg = self.cfg
        d_f = cfg.dense_x[-1] if cfg.dense_x else cfg.x_dim
        d_xv = cfg.dense_xv_gxv[-1] if cfg.dense_xv_gxv else d_f + cfg.v_dim
        d_gz = cfg.dense_gxv_gz[-1] if cfg.dense_gxv_gz else 2 * cfg.dim_rnn_gxv
        return d_f, d_xv, d_gz

    def layout(self):
        cfg = self.cfg
        d_f, d_xv, d_gz = self.dims()
        Z, V = cfg.z_dim, cfg.v_dim
        g_v = ("lstm", d_f, cfg.dim_rnn_gv, cfg.num_rnn_gv, "lstm", True)  # one direction of a bidirectional stack
        g_xv = ("lstm", d_xv, cfg.dim_rnn_gxv, cfg.num_rnn_gxv, "lstm", True)
        return (
            ("mlp_x", ("mlp", (cfg.x_dim, *cfg.dense_x))),
            ("rnn_g_v", g_v), ("rnn_g_v_reverse", g_v),
            ("posterior_v", ("mlp", (2 * cfg.dim_rnn_gv, *cfg.dense_gv_v, 2 * V))),
            ("mlp_xv_gxv", ("mlp", (d_f + V, *cfg.dense_xv_gxv))),
            ("rnn_g_xv", g_xv), ("rnn_g_xv_reverse", g_xv),
            ("mlp_gxv_gz", ("mlp", (2 * cfg.dim_rnn_gxv, *cfg.dense_gxv_gz))),
            ("rnn_g_z", ("lstm", d_gz, cfg.dim_rnn_gz, cfg.num_rnn_gz, "rnn")),
            ("posterior_z", ("mlp", (cfg.dim_rnn_gz, 2 * Z))),
            ("rnn_prior", ("lstm", Z, cfg.dim_rnn_prior, cfg.num_rnn_prior)),
            ("prior", ("mlp", (cfg.dim_rnn_prior, 2 * Z))),
            ("decoder", ("mlp", (V + Z, *cfg.dense_vz_x, base.decoder_out_dim(cfg)))),
        )

    def review_names(self) -> list:
        """The review's state_dict names of this layout (dvae_jax/interop.py)."""
        from dvae_jax import interop as io

        cfg = self.cfg
        return (
            io.mlp_entries("mlp_x", "mlp_x", len(cfg.dense_x))
            + io.lstm_entries("rnn_g_v", "rnn_g_v", cfg.num_rnn_gv)
            + io.lstm_entries("rnn_g_v", "rnn_g_v_reverse", cfg.num_rnn_gv, suffix="_reverse")
            + io.heads_entries("mlp_gv_v", ("inf_v_mean", "inf_v_logvar"), "posterior_v", len(cfg.dense_gv_v))
            + io.mlp_entries("mlp_xv_gxv", "mlp_xv_gxv", len(cfg.dense_xv_gxv))
            + io.lstm_entries("rnn_g_xv", "rnn_g_xv", cfg.num_rnn_gxv)
            + io.lstm_entries("rnn_g_xv", "rnn_g_xv_reverse", cfg.num_rnn_gxv, suffix="_reverse")
            + io.mlp_entries("mlp_gxv_gz", "mlp_gxv_gz", len(cfg.dense_gxv_gz))
            + io.lstm_entries("rnn_g_z", "rnn_g_z", cfg.num_rnn_gz)
            + io.heads_entries("", ("inf_z_mean", "inf_z_logvar"), "posterior_z", 0)
            + io.lstm_entries("rnn_prior", "rnn_prior", cfg.num_rnn_prior)
            + io.heads_entries("", ("prior_mean", "prior_logvar"), "prior", 0)
            + io.single_out_entries("mlp_vz_x", "gen_out", "decoder", len(cfg.dense_vz_x))
        )

    def params(self, variables: Any) -> Params:
        P = base.params_tree(variables)
        mlp, lstm = (lambda k: base.read_mlp(P.get(k))), (lambda k: base.read_lstm(P[k]))
        decoder = mlp("decoder")
        dec_v, dec_z = base.split_first(decoder[0], self.cfg.v_dim)
        return matmul.cast_kernels(Params(
            mlp("mlp_x"), lstm("rnn_g_v"), lstm("rnn_g_v_reverse"), mlp("posterior_v"), mlp("mlp_xv_gxv"),
            lstm("rnn_g_xv"), lstm("rnn_g_xv_reverse"), mlp("mlp_gxv_gz"), lstm("rnn_g_z"),
            mlp("posterior_z"), lstm("rnn_prior"), mlp("prior"), decoder, dec_v, dec_z,
        ), self.cfg.matmul_dtype)

    def initial_carry(self, p: Params, n: int, dtype=jnp.float32) -> Carry:
        cfg = self.cfg
        return Carry(jnp.zeros((n, cfg.v_dim), dtype),
                     base.lstm_zeros(n, cfg.dim_rnn_prior, cfg.num_rnn_prior, dtype),
                     jnp.zeros((n, cfg.z_dim), dtype), jnp.zeros((n,), bool))

    # -- the sequence-level latent and the hoisted posterior of z

    def _features(self, p: Params, x: Float[Array, "b t f"], drop: Dropout) -> Float[Array, "t b d"]:
        # MLP_x batch-major (its wide input is not transposed); only its output is made time-major.
        return base.time_major(base.mlp(p.mlp_x, x, self.act, drop=drop))

    def sequence(self, p: Params, x, carry: Carry, noise, posterior: bool, temperature,
                 drop: Dropout, lengths: Array | None = None) -> tuple[Carry, Latent]:
        cfg = self.cfg
        has = jnp.ones_like(carry.has_v)
        if not posterior:  # N(0, I) tempered, unless the carry already holds this sequence's v
            v = jnp.where(carry.has_v[:, None], carry.v, temperature * noise).astype(carry.v.dtype)
            return carry._replace(v=v, has_v=has), Latent(v)
        f = self._features(p, x, drop)
        _, fwd, bwd = base.run_bilstm(p.rnn_g_v, p.rnn_g_v_reverse, f, cfg.unroll, lengths)
        s = jnp.concatenate([fwd.h[-1], bwd.h[-1]], -1)  # after frame T, after frame 1
        a = base.mlp(p.posterior_v, s, self.act, final_act=False, drop=drop)
        mean, logvar = base.heads(a, cfg.v_dim, cfg.logvar_clip)
        v = base.sample_posterior(mean, logvar, noise)
        return carry._replace(v=v, has_v=has), Latent(v, mean, logvar)

    def hoist(self, p: Params, x: Float[Array, "b t f"], carry: Carry, drop: Dropout,
              need_prior: bool, lengths: Array | None = None) -> tuple[Data, None]:
        if need_prior:  # the prior is sampled in the scan: the posterior is not read
            return Data(None, None), None
        cfg = self.cfg
        f = self._features(p, x, drop)
        v = jnp.broadcast_to(carry.v.astype(f.dtype), (*f.shape[:2], cfg.v_dim))
        g = base.mlp(p.mlp_xv_gxv, jnp.concatenate([f, v], -1), self.act, drop=drop)
        g = base.run_bilstm(p.rnn_g_xv, p.rnn_g_xv_reverse, g, cfg.unroll, lengths)[0]
        g = base.mlp(p.mlp_gxv_gz, g, self.act, drop=drop)
        r = base.run_lstm(p.rnn_g_z, g, unroll=cfg.unroll)[0]
        a = base.mlp(p.posterior_z, r, self.act, final_act=False, drop=drop)
        return Data(*base.heads(a, cfg.z_dim, cfg.logvar_clip)), None

    # -- per step

    def _prior_heads(self, p: Params, q: Array, drop: Dropout) -> tuple[Array, Array]:
        a = base.mlp(p.prior, q, self.act, final_act=False, drop=drop)
        return base.heads(a, self.cfg.z_dim, self.cfg.logvar_clip)

    def enter(self, p: Params, carry: Carry, data: Data | None, hoisted: bool,
              drop: Dropout) -> tuple[Carry, Ctx]:
        if hoisted and data.mean is not None:  # the posterior pass: the prior runs in finish
            return carry, Ctx(carry.v, None, None)
        state = base.lstm_step(p.rnn_prior, carry.prior, base.lstm_input(p.rnn_prior[0], carry.z_prev))
        return carry._replace(prior=state), Ctx(carry.v, *self._prior_heads(p, state.h[-1], drop))

    def latent(self, p: Params, carry: Carry, ctx: Ctx, data: Data | None, noise: Array,
               posterior: bool, temperature, drop: Dropout) -> Latent:
        if posterior:
            return Latent(base.sample_posterior(data.mean, data.logvar, noise), data.mean, data.logvar)
        return Latent(base.sample_prior(ctx.loc, ctx.logvar, noise, temperature))

    def _decoder(self, p: Params, v: Float[Array, "b v"], z: Float[Array, "b t z"],
                 drop: Dropout) -> Float[Array, "b t o"]:
        # [v, z_t] W + b = (v W_v + b), once per sequence, + z_t W_z.
        pre = base.dense(p.dec_v, v.astype(z.dtype))[:, None] + base.mm(z, p.dec_z)
        return base.decoder_out(self.cfg, base.finish_layer(pre, p.decoder[1:], self.act, drop))

    def emit(self, p: Params, ctx: Ctx, zf: Array, drop: Dropout) -> Array:
        return self._decoder(p, ctx.v, zf[:, None], drop)[:, 0]

    def frame_in(self, p: Params, x: Array, drop: Dropout) -> Array:
        return x  # never read: no recurrence takes a frame

    def leave(self, p: Params, carry: Carry, ctx: Ctx, zf: Array, frame, drop: Dropout) -> Carry:
        return carry._replace(z_prev=zf)

    def record(self, ctx: Ctx, zf: Array) -> tuple[Array, Array] | None:
        return None if ctx.loc is None else (ctx.loc, ctx.logvar)

    def decode(self, p: Params, z: Float[Array, "t b z"], carry: Carry, drop: Dropout) -> tuple[Array, None]:
        """gen_out(MLP_vz_x([v, z_t])) of every frame (b, t, o), v from ``carry``; the decoder
        has no state (None: the carry after the latent chain stands)."""
        return self._decoder(p, carry.v, base.time_major(z), drop), None

    def finish(self, p: Params, rec, z, carry0: Carry, drop: Dropout, x_out=None, lengths=None):
        cfg = self.cfg
        end = None
        if rec is not None:  # the scan stepped LSTM_prior: its priors, its carry
            loc, logvar = base.time_major(rec[0]), base.time_major(rec[1])
        else:
            z_prev = jnp.concatenate([carry0.z_prev[None].astype(z.dtype), z[:-1]], axis=0)
            q, end = base.run_lstm(p.rnn_prior, z_prev, carry0.prior, unroll=cfg.unroll)
            loc, logvar = (base.time_major(a) for a in self._prior_heads(p, q, drop))
        x_out = self.decode(p, z, carry0, drop)[0] if x_out is None else base.time_major(x_out)
        return loc, logvar, x_out, end

    def close(self, carry: Carry, aux, hoisted: bool, end: LSTMState | None = None) -> Carry:
        # LSTM_prior ran batched in finish: its state after the last frame comes from there.
        return carry if end is None else carry._replace(prior=end)
