"""SRNN (Fraccaro et al. 2016) in the DVAE review's formulation (MODELS.md), with optional Resq.

Forward state from the previous frame: h_t = LSTM_h(MLP_x_h(x_{t-1}), h_{t-1}), x_0 = 0;
prior p(z_t | z_{t-1}, h_t) from [h_t, z_{t-1}] (z_0 = 0); decoder p(x_t | z_t, h_t) from [h_t, z_t];
backward state g_t = LSTM_g(MLP_hx_g([h_t, x_t]), g_{t+1}) (x_t read through MLP_x_h with
share_x_embedding, as the SRNN code does); posterior q(z_t | z_{t-1}, g_t) from
[g_t, z_{t-1}]; Resq: the posterior mean is the prior mean plus the posterior network's output.
Hoisted (teacher forcing): both LSTMs (fed by data only, layer by layer), the g share of the
posterior's first layer (and the h share of the prior's, when the prior is sampled in the scan);
the scan runs the latent chain only; after it, the prior and decoder of every frame. Free
running and scheduled sampling step LSTM_h in the scan, fed by the generated frame.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax.models import base, cudnn_lstm, matmul
from dvae_jax.models.base import LSTM, MLP, Dropout, Latent, Linear, LSTMState


class Params(NamedTuple):
    """SRNN parameters (the review's module names), plus the first layers split once per pass."""

    mlp_x_h: MLP
    rnn_h: LSTM
    mlp_hx_g: MLP
    rnn_g: LSTM
    posterior: MLP  # mlp_gz_z + [inf_mean | inf_logvar]
    prior: MLP  # mlp_hz_z + [prior_mean | prior_logvar]
    decoder: MLP  # mlp_hz_x + gen_out
    post_g: Linear  # the posterior's first layer, g part (bias in)
    post_z: Float[Array, "z p"]  # ... and its z_{t-1} part
    prior_h: Linear  # the prior's first layer, h part (bias in)
    prior_z: Float[Array, "z q"]  # ... and its z_{t-1} part


class Carry(NamedTuple):
    state: LSTMState  # LSTM_h after h_{t-1}
    x_prev: Float[Array, "b f"]  # x_{t-1}
    z_prev: Float[Array, "b z"]  # z_{t-1}


class Data(NamedTuple):
    """Per-step inputs from the real frames (t, b, ...)."""

    h: Float[Array, "t b h"]  # teacher-forced h_t
    pre_post: Float[Array, "t b p"]  # g_t's share of the posterior's first layer
    pre_prior: Float[Array, "t b q"] | None  # h_t's share of the prior's first layer (if sampled)
    frame: Float[Array, "t b f"]  # x_t


class Ctx(NamedTuple):
    h: Float[Array, "b h"]
    pre_prior: Float[Array, "b q"] | None


class SRNN(base.DVAE):
    name = "srnn"

    def layout(self):
        cfg = self.cfg
        H, G, Z = cfg.dim_rnn, cfg.dim_rnn_g, cfg.z_dim
        d_xh = cfg.dense_x_h[-1] if cfg.dense_x_h else cfg.x_dim
        d_xg = d_xh if cfg.share_x_embedding else cfg.x_dim  # x_t as the backward path reads it
        d_hxg = cfg.dense_hx_g[-1] if cfg.dense_hx_g else H + d_xg
        return (
            ("mlp_x_h", ("mlp", (cfg.x_dim, *cfg.dense_x_h))),
            ("rnn_h", ("lstm", d_xh, H, cfg.num_rnn, cfg.rnn_cell)),
            ("mlp_hx_g", ("mlp", (H + d_xg, *cfg.dense_hx_g))),
            ("rnn_g", ("lstm", d_hxg, G, cfg.num_rnn, cfg.rnn_cell)),
            *base.head_layout("posterior", (G + Z, *cfg.dense_gz_z, 2 * Z), cfg.separate_heads),
            *base.head_layout("prior", (H + Z, *cfg.dense_hz_z, 2 * Z), cfg.separate_heads),
            ("decoder", ("mlp", (H + Z, *cfg.dense_hz_x, base.decoder_out_dim(cfg)))),
        )

    def review_names(self) -> list:
        """The review's state_dict names of this layout (dvae_jax/interop.py)."""
        from dvae_jax import interop as io

        cfg = self.cfg
        return (
            io.mlp_entries("mlp_x_h", "mlp_x_h", len(cfg.dense_x_h))
            + io.lstm_entries("rnn_h", "rnn_h", cfg.num_rnn)
            + io.mlp_entries("mlp_hx_g", "mlp_hx_g", len(cfg.dense_hx_g))
            + io.lstm_entries("rnn_g", "rnn_g", cfg.num_rnn)
            + io.heads_entries("mlp_gz_z", ("inf_mean", "inf_logvar"), "posterior", len(cfg.dense_gz_z))
            + io.heads_entries("mlp_hz_z", ("prior_mean", "prior_logvar"), "prior", len(cfg.dense_hz_z))
            + io.single_out_entries("mlp_hz_x", "gen_out", "decoder", len(cfg.dense_hz_x))
        )

    def params(self, variables: Any) -> Params:
        P = base.params_tree(variables)
        posterior, prior = base.read_heads(P, "posterior"), base.read_heads(P, "prior")
        post_g, post_z = base.split_first(posterior[0], self.cfg.dim_rnn_g)
        prior_h, prior_z = base.split_first(prior[0], self.cfg.dim_rnn)
        return matmul.cast_kernels(Params(
            base.read_mlp(P.get("mlp_x_h")), base.read_lstm(P["rnn_h"]), base.read_mlp(P.get("mlp_hx_g")),
            base.read_lstm(P["rnn_g"]), posterior, prior, base.read_mlp(P.get("decoder")),
            post_g, post_z, prior_h, prior_z,
        ), self.cfg.matmul_dtype)

    def initial_carry(self, p: Params, n: int, dtype=jnp.float32) -> Carry:
        cfg = self.cfg
        return Carry(
            base.lstm_zeros(n, cfg.dim_rnn, cfg.num_rnn, dtype),
            jnp.zeros((n, cfg.x_dim), dtype), jnp.zeros((n, cfg.z_dim), dtype),
        )

    def frame_in(self, p: Params, x: Array, drop: Dropout) -> Array:
        return x  # the frame itself: it enters LSTM_h at the next step

    def _backward(self, p: Params, h: Float[Array, "t b h"], x: Float[Array, "b t f"],
                  drop: Dropout, lengths: Array | None = None) -> Float[Array, "t b g"]:
        """g_t = LSTM_g(MLP_hx_g([h_t, x_t]), g_{t+1}), run from the last frame back (``x``: the
        frames, or their MLP_x_h embedding with ``share_x_embedding``)."""
        H = self.cfg.dim_rnn
        if p.mlp_hx_g:
            first_h, w_x = base.split_first(p.mlp_hx_g[0], H)
            pre = base.time_major(base.mm(x, w_x)) + base.dense(first_h, h)  # [h, x] W = h W_h + x W_x
            a = self.act(pre)
            a = a if drop is None else drop(a)
            hx = base.mlp(p.mlp_hx_g[1:], a, self.act, drop=drop)
        else:
            hx = jnp.concatenate([h, base.time_major(x)], -1)
        return cudnn_lstm.maybe_run_lstm(p.rnn_g, hx, reverse=True, impl=self.cfg.lstm_impl,
                                        unroll=self.cfg.unroll, lengths=lengths)[0]

    def hoist(self, p: Params, x: Float[Array, "b t f"], carry: Carry, drop: Dropout,
              need_prior: bool, lengths: Array | None = None) -> tuple[Data, LSTMState]:
        # MLP_x_h is applied per frame, so MLP_x_h(x_{t-1}) is MLP_x_h(x) shifted by one frame,
        # with the carry's x_{t-1} first (x_0 = 0 at a cold start). Batch-major: only the narrow
        # output is transposed.
        a = base.mlp(p.mlp_x_h, x, self.act, drop=drop)
        a0 = base.mlp(p.mlp_x_h, carry.x_prev[:, None], self.act, drop=drop)
        a_prev = base.time_major(jnp.concatenate([a0, a[:, :-1]], axis=1))
        h, state = cudnn_lstm.maybe_run_lstm(p.rnn_h, a_prev, carry.state, impl=self.cfg.lstm_impl,
                                              unroll=self.cfg.unroll)
        g = self._backward(p, h, a if self.cfg.share_x_embedding else x, drop, lengths)
        pre_prior = base.dense(p.prior_h, h) if need_prior or self.cfg.resq else None
        return Data(h, base.dense(p.post_g, g), pre_prior, base.time_major(x)), state

    def enter(self, p: Params, carry: Carry, data: Data | None, hoisted: bool,
              drop: Dropout) -> tuple[Carry, Ctx]:
        if hoisted:
            return carry, Ctx(data.h, data.pre_prior)
        a = base.mlp(p.mlp_x_h, carry.x_prev, self.act, drop=drop)
        state = base.lstm_step(p.rnn_h, carry.state, base.lstm_input(p.rnn_h[0], a))
        h = state.h[-1]
        return carry._replace(state=state), Ctx(h, base.dense(p.prior_h, h))

    def _prior(self, p: Params, ctx: Ctx, z_prev: Array, drop: Dropout) -> tuple[Array, Array]:
        a = base.finish_layer(ctx.pre_prior + base.mm(z_prev, p.prior_z), p.prior[1:], self.act, drop)
        return base.heads(a, self.cfg.z_dim, self.cfg.logvar_clip)

    def latent(self, p: Params, carry: Carry, ctx: Ctx, data: Data | None, noise: Array,
               posterior: bool, temperature, drop: Dropout) -> Latent:
        cfg = self.cfg
        z_prev = carry.z_prev
        if not posterior:
            loc, logvar = self._prior(p, ctx, z_prev, drop)
            return Latent(base.sample_prior(loc, logvar, noise, temperature))
        a = base.finish_layer(data.pre_post + base.mm(z_prev, p.post_z), p.posterior[1:], self.act, drop)
        mean, logvar = base.heads(a, cfg.z_dim, cfg.logvar_clip)
        if cfg.resq:
            mean = self._prior(p, ctx, z_prev, drop)[0] + mean
        return Latent(base.sample_posterior(mean, logvar, noise), mean, logvar)

    def emit(self, p: Params, ctx: Ctx, zf: Array, drop: Dropout) -> Array:
        a = base.mlp(p.decoder, jnp.concatenate([ctx.h, zf], -1), self.act, final_act=False, drop=drop)
        return base.decoder_out(self.cfg, a)

    def leave(self, p: Params, carry: Carry, ctx: Ctx, zf: Array, frame: Array, drop: Dropout) -> Carry:
        return Carry(carry.state, frame, zf)

    def record(self, ctx: Ctx, zf: Array) -> Array:
        return ctx.h

    def finish(self, p: Params, rec, z, carry0: Carry, drop: Dropout, x_out=None, lengths=None):
        cfg = self.cfg
        H, Z = cfg.dim_rnn, cfg.z_dim
        z_prev = jnp.concatenate([carry0.z_prev[None].astype(z.dtype), z[:-1]], axis=0)
        # One transpose of the narrow [h, z_{t-1}, z_t]; prior and decoder then run batch-major.
        hz = base.time_major(jnp.concatenate([rec, z_prev, z], -1))  # (b, t, H + 2Z)
        h_b, z_prev_b, z_b = hz[..., :H], hz[..., H:H + Z], hz[..., H + Z:]
        prior = base.mlp(p.prior, jnp.concatenate([h_b, z_prev_b], -1), self.act, final_act=False, drop=drop)
        loc, logvar = base.heads(prior, Z, cfg.logvar_clip)
        if x_out is None:
            dec = base.mlp(p.decoder, jnp.concatenate([h_b, z_b], -1), self.act, final_act=False, drop=drop)
            x_out = base.decoder_out(cfg, dec)
        else:
            x_out = base.time_major(x_out)
        return loc, logvar, x_out, None

    def close(self, carry: Carry, aux: LSTMState, hoisted: bool, end=None) -> Carry:
        # With LSTM_h hoisted the scan never stepped it: its final state comes from the hoist.
        return carry._replace(state=aux) if hoisted else carry
