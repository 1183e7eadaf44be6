"""RVAE (Leglaive et al. 2020, "A recurrent variational autoencoder for speech enhancement") in
the DVAE review's formulation (dvae/model/rvae.py; docs: /work/notes/issue15_design.md section 4).

Inference, q(z_t | z_{1:t-1}, x):
  g_x = LSTM_g_x(MLP_x_gx(x)): causal (``bidir_g_x`` false) one LSTM run from the last frame
  back, so g_x_t summarises x_{t:T}; non-causal, the review runs its bidirectional LSTM on the
  *flipped* sequence and flips the output back, so the forward-named weights (``*_l0``) run
  backward in time and ``*_l0_reverse`` forward in time: g_x_t = [back(x_{t:T}), fwd(x_{1:t})].
  g_z_t = LSTM_g_z(MLP_z_gz(z_{t-1}), g_z_{t-1}) (z_0 = 0, stepped *before* the heads);
  [mean | logvar] = heads(MLP_g_z([g_x_t, g_z_t])), z_t = mean + exp(logvar / 2) eps_t.
Prior p(z_t) = N(0, I) (a Student-t prior is the standard t(nu)): loc 0, log-variance 0.
Decoder: h = LSTM_h(MLP_z_h(z)) forward (causal, ``bidir_h`` false) or bidirectional with the
usual [forward | backward] outputs (not flipped); x_t's parameters = gen_out(MLP_h_x(h_t)).

No recurrence reads a frame (``feeds_back_x = False``): generation draws z_{1:T} ~ N(0, I)
(tempered) and decodes them together (:meth:`RVAE.decode`). Hoisted (teacher forcing): MLP_x_gx,
LSTM_g_x and its share of the first layer fed [g_x, g_z] (MLP_g_z's, or the heads' when MLP_g_z
is empty); the scan steps LSTM_g_z and samples; after it the decoder runs batched
(:meth:`RVAE.finish`).

Carry (:class:`Carry`): LSTM_g_z's state and z_{t-1} (the inference chain), and LSTM_h's state.
Causal decoder: LSTM_h's state after the last decoded z (what a continuation decodes from), so
priming means: the posterior over the prime (its backward g_x sees the prime x_{t:P} only), then
z ~ N(0, I) decoded from LSTM_h's state after z_P. Non-causal decoder (``bidir_h``): both
directions always start from zero, as in the review; the carry's ``h`` is the forward direction's
state after the last decoded frame, for information only (no continuation can start from a
bidirectional pass): priming decodes the prime's posterior latents and the continuation's prior
latents jointly (drivers._primed_jointly).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax.models import base, cudnn_lstm, matmul
from dvae_jax.models.base import LSTM, MLP, Dropout, Latent, Linear, LSTMState


class Params(NamedTuple):
    """RVAE parameters (the review's module names), plus the first layer fed [g_x, g_z] split once
    per pass. A unidirectional model has empty ``*_reverse`` stacks."""

    mlp_x_gx: MLP
    rnn_g_x: LSTM  # *_l0...: backward in time (causal and non-causal alike: the review's flip)
    rnn_g_x_reverse: LSTM  # *_l0_reverse...: forward in time (non-causal only)
    mlp_z_gz: MLP
    rnn_g_z: LSTM
    posterior: MLP  # mlp_g_z + [inf_mean | inf_logvar]
    mlp_z_h: MLP
    rnn_h: LSTM  # forward in time
    rnn_h_reverse: LSTM  # backward in time (non-causal only)
    decoder: MLP  # mlp_h_x + gen_out
    post_gx: Linear  # the posterior's first layer, g_x part (bias in)
    post_gz: Float[Array, "g p"]  # ... and its g_z part


class Carry(NamedTuple):
    g_z: LSTMState  # LSTM_g_z after reading z_{t-1} (inference)
    z_prev: Float[Array, "b z"]  # z_{t-1}
    h: LSTMState  # LSTM_h after the last decoded frame (non-causal: its forward direction)


class Data(NamedTuple):
    """Per-step inputs from the real frames (t, b, ...); all None when only the prior is drawn."""

    pre_post: Float[Array, "t b p"] | None  # g_x_t's share of the posterior's first layer
    frame: None = None  # no recurrence reads a frame


class RVAE(base.DVAE):
    name = "rvae"
    feeds_back_x = False
    review_cells_only = True

    def __init__(self, cfg):
        super().__init__(cfg)
        # The bidirectional decoder's frame t reads z_{t:T}: generation decodes jointly.
        self.causal_decoder = not cfg.bidir_h

    # -- parameters
    def dims(self) -> tuple[int, int, int, int]:
        """(MLP_x_gx's output, g_x's width, MLP_z_gz's output, MLP_z_h's output)."""
        cfg = self.cfg
        d_x = cfg.dense_x_gx[-1] if cfg.dense_x_gx else cfg.x_dim
        g_x = (2 if cfg.bidir_g_x else 1) * cfg.dim_rnn_g_x
        d_zg = cfg.dense_z_gz[-1] if cfg.dense_z_gz else cfg.z_dim
        d_zh = cfg.dense_z_h[-1] if cfg.dense_z_h else cfg.z_dim
        return d_x, g_x, d_zg, d_zh

    def layout(self):
        cfg = self.cfg
        d_x, g_x, d_zg, d_zh = self.dims()
        Z, H = cfg.z_dim, cfg.dim_rnn_h

        def rnn(name, in_dim, hidden, layers, bidir):
            if not bidir:
                return ((name, ("lstm", in_dim, hidden, layers)),)
            direction = ("lstm", in_dim, hidden, layers, "lstm", True)  # layers >= 1 read [fwd, bwd]
            return (name, direction), (f"{name}_reverse", direction)

        return (
            ("mlp_x_gx", ("mlp", (cfg.x_dim, *cfg.dense_x_gx))),
            *rnn("rnn_g_x", d_x, cfg.dim_rnn_g_x, cfg.num_rnn_g_x, cfg.bidir_g_x),
            ("mlp_z_gz", ("mlp", (Z, *cfg.dense_z_gz))),
            ("rnn_g_z", ("lstm", d_zg, cfg.dim_rnn_g_z, cfg.num_rnn_g_z)),
            ("posterior", ("mlp", (g_x + cfg.dim_rnn_g_z, *cfg.dense_g_z, 2 * Z))),
            ("mlp_z_h", ("mlp", (Z, *cfg.dense_z_h))),
            *rnn("rnn_h", d_zh, H, cfg.num_rnn_h, cfg.bidir_h),
            ("decoder", ("mlp", ((2 if cfg.bidir_h else 1) * H, *cfg.dense_h_x, base.decoder_out_dim(cfg)))),
        )

    def review_names(self) -> list:
        """The review's state_dict names of this layout (dvae_jax/interop.py)."""
        from dvae_jax import interop as io

        cfg = self.cfg

        def rnn(name, layers, bidir):
            rev = io.lstm_entries(name, f"{name}_reverse", layers, suffix="_reverse") if bidir else []
            return io.lstm_entries(name, name, layers) + rev

        return (
            io.mlp_entries("mlp_x_gx", "mlp_x_gx", len(cfg.dense_x_gx))
            + rnn("rnn_g_x", cfg.num_rnn_g_x, cfg.bidir_g_x)
            + io.mlp_entries("mlp_z_gz", "mlp_z_gz", len(cfg.dense_z_gz))
            + rnn("rnn_g_z", cfg.num_rnn_g_z, False)
            + io.heads_entries("mlp_g_z", ("inf_mean", "inf_logvar"), "posterior", len(cfg.dense_g_z))
            + io.mlp_entries("mlp_z_h", "mlp_z_h", len(cfg.dense_z_h))
            + rnn("rnn_h", cfg.num_rnn_h, cfg.bidir_h)
            + io.single_out_entries("mlp_h_x", "gen_out", "decoder", len(cfg.dense_h_x))
        )

    def params(self, variables: Any) -> Params:
        P = base.params_tree(variables)

        def lstm(name):
            return base.read_lstm(P[name]) if name in P else ()

        posterior = base.read_mlp(P["posterior"])
        post_gx, post_gz = base.split_first(posterior[0], self.dims()[1])
        return matmul.cast_kernels(Params(
            base.read_mlp(P.get("mlp_x_gx")), lstm("rnn_g_x"), lstm("rnn_g_x_reverse"),
            base.read_mlp(P.get("mlp_z_gz")), lstm("rnn_g_z"), posterior, base.read_mlp(P.get("mlp_z_h")),
            lstm("rnn_h"), lstm("rnn_h_reverse"), base.read_mlp(P["decoder"]), post_gx, post_gz,
        ), self.cfg.matmul_dtype)

    # -- the recurrence
    def initial_carry(self, p: Params, n: int, dtype=jnp.float32) -> Carry:
        cfg = self.cfg
        return Carry(base.lstm_zeros(n, cfg.dim_rnn_g_z, cfg.num_rnn_g_z, dtype),
                     jnp.zeros((n, cfg.z_dim), dtype), base.lstm_zeros(n, cfg.dim_rnn_h, cfg.num_rnn_h, dtype))

    def frame_in(self, p: Params, x: Array, drop: Dropout) -> None:
        return None  # no recurrence reads a frame

    def hoist(self, p: Params, x: Float[Array, "b t f"], carry: Carry, drop: Dropout,
              need_prior: bool, lengths: Array | None = None) -> tuple[Data, None]:
        if need_prior:  # z from N(0, I): the inference path is not needed
            return Data(None), None
        cfg = self.cfg
        a = base.time_major(base.mlp(p.mlp_x_gx, x, self.act, drop=drop))
        if cfg.bidir_g_x:
            # The review's quirk: the bidirectional LSTM reads the flipped sequence (with padded
            # rows: each row's real frames flipped, the padding kept at the end).
            flip = a[::-1] if lengths is None else base.align_end(a, lengths)[::-1]
            g, _, _ = base.run_bilstm(p.rnn_g_x, p.rnn_g_x_reverse, flip, cfg.unroll, lengths)
            g = g[::-1] if lengths is None else base.align_start(g[::-1], lengths)
        else:
            g = cudnn_lstm.maybe_run_lstm(p.rnn_g_x, a, reverse=True, impl=cfg.lstm_impl, unroll=cfg.unroll,
                                          lengths=lengths)[0]
        return Data(base.dense(p.post_gx, g)), None

    def enter(self, p: Params, carry: Carry, data: Data | None, hoisted: bool,
              drop: Dropout) -> tuple[Carry, Float[Array, "b g"] | None]:
        if data is None or data.pre_post is None:
            return carry, None  # the prior N(0, I) reads no inference state: LSTM_g_z is not stepped
        u = base.mlp(p.mlp_z_gz, carry.z_prev, self.act, drop=drop)
        state = base.lstm_step(p.rnn_g_z, carry.g_z, base.lstm_input(p.rnn_g_z[0], u))
        return carry._replace(g_z=state), state.h[-1]

    def latent(self, p: Params, carry: Carry, ctx: Array | None, data: Data | None, noise: Array,
               posterior: bool, temperature, drop: Dropout) -> Latent:
        cfg = self.cfg
        if not posterior:
            zeros = jnp.zeros_like(noise)
            return Latent(base.sample_prior(zeros, zeros, noise, temperature))
        a = base.finish_layer(data.pre_post + base.mm(ctx, p.post_gz), p.posterior[1:], self.act, drop)
        mean, logvar = base.heads(a, cfg.z_dim, cfg.logvar_clip)
        return Latent(base.sample_posterior(mean, logvar, noise), mean, logvar)

    def emit(self, p: Params, ctx: Any, zf: Array, drop: Dropout) -> Array:
        raise NotImplementedError("rvae decodes whole latent sequences (decode), never one frame")

    def leave(self, p: Params, carry: Carry, ctx: Any, zf: Array, frame: None, drop: Dropout) -> Carry:
        return carry._replace(z_prev=zf)

    def record(self, ctx: Any, zf: Array) -> None:
        return None  # finish reads the latents only

    def finish(self, p: Params, rec, z, carry0: Carry, drop: Dropout, x_out=None, lengths=None):
        zeros = jnp.zeros_like(base.time_major(z))
        if x_out is not None:
            return zeros, zeros, base.time_major(x_out), None
        x_out, end = self.decode(p, z, carry0, drop, lengths)
        return zeros, zeros, x_out, end

    def decode(self, p: Params, z: Float[Array, "t b z"], carry: Carry,
               drop: Dropout, lengths: Array | None = None) -> tuple[Float[Array, "b t o"], LSTMState]:
        """The decoder of a whole latent sequence: (x's parameters (b, t, o), LSTM_h's state after
        the last frame). Causal: from the carry's LSTM_h state; non-causal: both directions from
        zero (the returned state is the forward direction's)."""
        cfg = self.cfg
        zh = base.mlp(p.mlp_z_h, z, self.act, drop=drop)
        if self.causal_decoder:
            h, end = cudnn_lstm.maybe_run_lstm(p.rnn_h, zh, carry.h, impl=cfg.lstm_impl, unroll=cfg.unroll)
        else:
            h, end, _ = base.run_bilstm(p.rnn_h, p.rnn_h_reverse, zh, cfg.unroll, lengths)
        # Batch-major before the decoder, so that its wide output needs no transpose.
        a = base.mlp(p.decoder, base.time_major(h), self.act, final_act=False, drop=drop)
        return base.decoder_out(cfg, a), end

    def close(self, carry: Carry, aux: None, hoisted: bool, end: LSTMState | None = None) -> Carry:
        # The scan never steps LSTM_h: its state after the last frame comes from the decoder.
        return carry if end is None else carry._replace(h=end)
