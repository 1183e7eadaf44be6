"""VRNN (Chung et al. 2015) in the DVAE review's formulation (MODELS.md), written once.

State h_t summarises x_{1:t-1}, z_{1:t-1} (h_1 = 0):
  posterior q(z_t | x_t, h_t) from [phi_x(x_t), h_t];  prior p(z_t | h_t);
  decoder p(x_t | z_t, h_t) from [phi_z(z_t), h_t];  h_{t+1} = LSTM([phi_x(x_t), phi_z(z_t)], h_t).
Hoisted (all frames at once): phi_x, its share of the posterior's first layer and of the LSTM
gates; after the scan: the prior over the stored h_t and the decoder. In the scan: the h_t share
of the posterior and the gates (one fused product with one LSTM layer), the sample, phi_z, the
LSTM update.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax.models import base, matmul
from dvae_jax.models.base import LSTM, MLP, Dropout, Latent, Linear, LSTMState

Carry = LSTMState


class Params(NamedTuple):
    """VRNN parameters (the review's module names), plus products derived once per pass."""

    phi_x: MLP  # feature_extractor_x
    phi_z: MLP  # feature_extractor_z
    posterior: MLP  # mlp_hx_z + [inf_mean | inf_logvar]
    prior: MLP  # mlp_h_z + [prior_mean | prior_logvar]
    decoder: MLP  # mlp_hz_x + gen_out
    rnn: LSTM
    post_x: Linear  # the posterior's first layer, phi_x part (bias in)
    post_h: Float[Array, "h p"]  # ... and its h part
    h_cat: Float[Array, "h q"] | None  # [post_h | W_h of the LSTM] with one LSTM layer (fused)


class Data(NamedTuple):
    """Per-step inputs from the real frames (t, b, ...)."""

    pre_post: Float[Array, "t b p"]  # phi_x(x_t)'s share of the posterior's first layer
    frame: Float[Array, "t b 4h"]  # phi_x(x_t)'s share of the first LSTM layer's gates


class Ctx(NamedTuple):
    h: Float[Array, "b h"]  # top layer's h_t
    post_h: Float[Array, "b p"]  # h_t's share of the posterior's first layer
    gates_h: Float[Array, "b 4h"] | None  # h_t W_h when fused


class VRNN(base.DVAE):
    name = "vrnn"

    def dims(self) -> tuple[int, int, int]:
        cfg = self.cfg
        d_x = cfg.dense_x[-1] if cfg.dense_x else cfg.x_dim
        d_z = cfg.dense_z[-1] if cfg.dense_z else cfg.z_dim
        return d_x, d_z, cfg.dim_rnn

    def layout(self):
        cfg = self.cfg
        d_x, d_z, H = self.dims()
        return (
            ("phi_x", ("mlp", (cfg.x_dim, *cfg.dense_x))),
            ("phi_z", ("mlp", (cfg.z_dim, *cfg.dense_z))),
            *base.head_layout("posterior", (d_x + H, *cfg.dense_hx_z, 2 * cfg.z_dim), cfg.separate_heads),
            *base.head_layout("prior", (H, *cfg.dense_h_z, 2 * cfg.z_dim), cfg.separate_heads),
            ("decoder", ("mlp", (d_z + H, *cfg.dense_hz_x, base.decoder_out_dim(cfg)))),
            ("rnn", ("lstm", d_x + d_z, H, cfg.num_rnn, cfg.rnn_cell)),
        )

    def review_names(self) -> list:
        """The review's state_dict names of this layout (dvae_jax/interop.py)."""
        from dvae_jax import interop as io

        cfg = self.cfg
        return (
            io.mlp_entries("feature_extractor_x", "phi_x", len(cfg.dense_x))
            + io.mlp_entries("feature_extractor_z", "phi_z", len(cfg.dense_z))
            + io.heads_entries("mlp_hx_z", ("inf_mean", "inf_logvar"), "posterior", len(cfg.dense_hx_z))
            + io.heads_entries("mlp_h_z", ("prior_mean", "prior_logvar"), "prior", len(cfg.dense_h_z))
            + io.single_out_entries("mlp_hz_x", "gen_out", "decoder", len(cfg.dense_hz_x))
            + io.lstm_entries("rnn", "rnn", cfg.num_rnn)
        )

    def params(self, variables: Any) -> Params:
        P = base.params_tree(variables)
        posterior, rnn = base.read_heads(P, "posterior"), base.read_lstm(P["rnn"])
        post_x, post_h = base.split_first(posterior[0], self.dims()[0])
        h_cat = jnp.concatenate([post_h, rnn[0].wh], axis=1) if len(rnn) == 1 else None
        return matmul.cast_kernels(Params(
            base.read_mlp(P.get("phi_x")), base.read_mlp(P.get("phi_z")), posterior,
            base.read_heads(P, "prior"), base.read_mlp(P.get("decoder")), rnn, post_x, post_h, h_cat,
        ), self.cfg.matmul_dtype)

    def initial_carry(self, p: Params, n: int, dtype=jnp.float32) -> Carry:
        return base.lstm_zeros(n, self.cfg.dim_rnn, self.cfg.num_rnn, dtype)

    @staticmethod
    def _gates_x(p: Params, phi_x: Float[Array, "... d"]) -> Float[Array, "... 4h"]:
        """phi_x's share of the first LSTM layer's gates, both biases in."""
        rnn0 = p.rnn[0]
        return base.mm(phi_x, rnn0.wi[: phi_x.shape[-1]]) + base.input_bias(rnn0)

    def frame_in(self, p: Params, x: Float[Array, "... f"], drop: Dropout) -> Float[Array, "... 4h"]:
        return self._gates_x(p, base.mlp(p.phi_x, x, self.act, drop=drop))

    def hoist(self, p: Params, x: Float[Array, "b t f"], carry: Carry, drop: Dropout,
              need_prior: bool, lengths=None) -> tuple[Data, None]:
        # phi_x runs batch-major (its wide input side is not transposed); only the narrow
        # phi_x is made time-major.
        phi_x = base.time_major(base.mlp(p.phi_x, x, self.act, drop=drop))
        return Data(base.dense(p.post_x, phi_x), self._gates_x(p, phi_x)), None

    def enter(self, p: Params, carry: Carry, data: Data | None, hoisted: bool,
              drop: Dropout) -> tuple[Carry, Ctx]:
        h = carry.h[-1]
        if p.h_cat is not None:
            # One LSTM layer: h_t feeds both the posterior and the gates, so one product with
            # the concatenated kernels replaces two (fewer, larger matmuls, forward and back).
            both = base.mm(h, p.h_cat)
            n_post = p.post_h.shape[1]
            return carry, Ctx(h, both[..., :n_post], both[..., n_post:])
        return carry, Ctx(h, base.mm(h, p.post_h), None)

    def latent(self, p: Params, carry: Carry, ctx: Ctx, data: Data | None, noise: Array,
               posterior: bool, temperature, drop: Dropout) -> Latent:
        cfg = self.cfg
        if posterior:
            a = base.finish_layer(data.pre_post + ctx.post_h, p.posterior[1:], self.act, drop)
            mean, logvar = base.heads(a, cfg.z_dim, cfg.logvar_clip)
            return Latent(base.sample_posterior(mean, logvar, noise), mean, logvar)
        loc, logvar = base.heads(base.mlp(p.prior, ctx.h, self.act, final_act=False, drop=drop),
                                 cfg.z_dim, cfg.logvar_clip)
        return Latent(base.sample_prior(loc, logvar, noise, temperature))

    def z_features(self, p: Params, z: Array, drop: Dropout) -> Array:
        return base.mlp(p.phi_z, z, self.act, drop=drop)

    def emit(self, p: Params, ctx: Ctx, zf: Array, drop: Dropout) -> Array:
        a = base.mlp(p.decoder, jnp.concatenate([zf, ctx.h], -1), self.act, final_act=False, drop=drop)
        return base.decoder_out(self.cfg, a)

    def leave(self, p: Params, carry: Carry, ctx: Ctx, zf: Array, frame: Array, drop: Dropout) -> Carry:
        pre0 = frame + base.mm(zf, p.rnn[0].wi[-zf.shape[-1]:])
        return base.lstm_step(p.rnn, carry, pre0, ctx.gates_h)

    def record(self, ctx: Ctx, zf: Array) -> tuple[Array, Array]:
        return ctx.h, zf

    def finish(self, p: Params, rec, z, carry0, drop: Dropout, x_out=None, lengths=None):
        cfg = self.cfg
        # Batch-major, so that the decoder's wide output needs no transpose.
        dec_in = base.time_major(jnp.concatenate([rec[1], rec[0]], axis=-1))  # (b, t, d_z + H)
        d_z = rec[1].shape[-1]
        prior = base.mlp(p.prior, dec_in[..., d_z:], self.act, final_act=False, drop=drop)
        loc, logvar = base.heads(prior, cfg.z_dim, cfg.logvar_clip)
        if x_out is None:
            x_out = base.decoder_out(cfg, base.mlp(p.decoder, dec_in, self.act, final_act=False, drop=drop))
        else:
            x_out = base.time_major(x_out)
        return loc, logvar, x_out, None
