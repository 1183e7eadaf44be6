"""DKF, the deep Markov model of Krishnan et al. 2017 ("structured inference"), as the DVAE review
writes it (dkf.py there).

Generative model: a gated transition p(z_t | z_{t-1}) (z_0 = 0; ReLU, sigmoid and softplus fixed,
not the configured activation):
  gate = sigmoid(L2(relu(L1 z_{t-1}))),  prop = L2'(relu(L1' z_{t-1})),
  loc = (1 - gate) * prior_mean(z_{t-1}) + gate * prop,  logvar = log softplus(L(relu(prop)));
and a memoryless decoder p(x_t | z_t) (MLP ``dense_z_x``, then ``gen_out``).
Inference: g_t from an LSTM over MLP_x_gx(x) run from the last frame back (g_t summarises
x_{t:T}; with ``bidir_gx`` a bidirectional LSTM, not flipped, and the average below is over
three terms), m_t = MLP_ztm1_g(z_{t-1}) (tanh after every layer, ``linear_last`` included),
q(z_t | z_{t-1}, x_{t:T}) from MLP_g_z((m_t + g_t) / 2) and two linear heads.

Hoisted (data only, all frames): MLP_x_gx, the LSTM(s) and g_t's share of MLP_g_z's first layer
(the average is taken before that linear layer, so W (m + g) / 2 + b = (W / 2) g + b + (W / 2) m).
The scan holds m_t, the rest of the posterior and the sample. After it: the transition over
z_{t-1} and the decoder, batched. The carry is z_{t-1}; x never enters a recurrence of the
generative model (``feeds_back_x = False``): generation runs the prior chain z_t ~ p(z_t |
z_{t-1}), then decodes every frame at once. Priming: the posterior over the prime (its backward
LSTM sees the prime only: the smoothing posterior of the prime, not of the whole sequence), then
the prior chain from z_P; the continuation depends on the prime through z_P alone.

Student-t prior: loc as above, the log-variance slot (2 log scale) is log softplus(.).
``dense_ztm1_g = ''`` crashes in the review (an undefined loop index); here it means
``linear_last`` reads z_{t-1} directly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax.models import base, cudnn_lstm, matmul
from dvae_jax.models.base import LSTM, MLP, Dropout, Latent, Linear

Carry = Float[Array, "b z"]  # z_{t-1}


class Params(NamedTuple):
    """DKF parameters (the review's module names), plus products derived once per pass."""

    mlp_x_gx: MLP
    rnn_gx: LSTM  # backward in time; with bidir_gx the forward direction
    rnn_gx_reverse: LSTM | None  # bidir_gx: the backward direction
    mlp_ztm1_g: MLP  # linear0.. then linear_last (the last layer here)
    posterior: MLP  # mlp_g_z + [inf_mean | inf_logvar]
    post_g: Linear  # the posterior's first layer / n_avg, bias in: g_t's share
    post_m: Float[Array, "h p"]  # ... m_t's share (the same kernel / n_avg)
    trans_in: Linear  # [mlp_gate.linear1 | mlp_z_prop.linear1 | prior_mean]: all read z_{t-1}
    gate_out: Linear  # mlp_gate.linear2
    prop_out: Linear  # mlp_z_prop.linear2
    prior_logvar: Linear  # prior_logvar.1
    decoder: MLP  # mlp_z_x + gen_out


class Data(NamedTuple):
    """Per-step inputs from the real frames (t, b, ...)."""

    pre_post: Float[Array, "t b p"]  # g_t's share of the posterior's first layer (bias in)
    frame: None = None  # no recurrence reads a frame


def log_softplus(a: Array) -> Array:
    """log(softplus(a)), finite for every a: below -50, softplus(a) = exp(a) to far below
    rounding, so the log is a itself (the direct formula underflows to -inf in float32 near
    -104, and its gradient becomes NaN)."""
    low = a < -50.0
    return jnp.where(low, a, jnp.log(jax.nn.softplus(jnp.where(low, 0.0, a))))


class DKF(base.DVAE):
    name = "dkf"
    feeds_back_x = False
    review_cells_only = True

    def layout(self):
        cfg = self.cfg
        Z, H = cfg.z_dim, cfg.dim_rnn_gx
        d_x = cfg.dense_x_gx[-1] if cfg.dense_x_gx else cfg.x_dim
        rnn = ("lstm", d_x, H, cfg.num_rnn_gx, "lstm", cfg.bidir_gx)
        return (
            ("mlp_x_gx", ("mlp", (cfg.x_dim, *cfg.dense_x_gx))),
            ("rnn_gx", rnn),
            *((("rnn_gx_reverse", rnn),) if cfg.bidir_gx else ()),
            ("mlp_ztm1_g", ("mlp", (Z, *cfg.dense_ztm1_g, H))),
            ("posterior", ("mlp", (H, *cfg.dense_g_z, 2 * Z))),
            ("mlp_gate", ("mlp", (Z, Z, Z))),
            ("mlp_z_prop", ("mlp", (Z, Z, Z))),
            ("prior_mean", ("mlp", (Z, Z))),
            ("prior_logvar", ("mlp", (Z, Z))),
            ("decoder", ("mlp", (Z, *cfg.dense_z_x, base.decoder_out_dim(cfg)))),
        )

    def review_names(self) -> list:
        """The review's state_dict names of this layout (dvae_jax/interop.py): its irregular ones
        are mlp_ztm1_g.linear_last, the 1-based mlp_gate / mlp_z_prop layers and prior_logvar.1
        (an nn.Sequential(ReLU, Linear, Softplus))."""
        from dvae_jax import interop as io

        cfg = self.cfg

        def linear(torch_name: str, flax_mlp: str, layer: int) -> list:
            path = (flax_mlp, f"linear{layer}")
            return [io.Entry(f"{torch_name}.weight", (*path, "kernel"), io.LINEAR_W),
                    io.Entry(f"{torch_name}.bias", (*path, "bias"), io.BIAS)]

        n_m = len(cfg.dense_ztm1_g)
        rnn = io.lstm_entries("rnn_gx", "rnn_gx", cfg.num_rnn_gx)
        if cfg.bidir_gx:
            rnn += io.lstm_entries("rnn_gx", "rnn_gx_reverse", cfg.num_rnn_gx, suffix="_reverse")
        return (
            io.mlp_entries("mlp_x_gx", "mlp_x_gx", len(cfg.dense_x_gx)) + rnn
            + io.mlp_entries("mlp_ztm1_g", "mlp_ztm1_g", n_m)
            + linear("mlp_ztm1_g.linear_last", "mlp_ztm1_g", n_m)
            + io.heads_entries("mlp_g_z", ("inf_mean", "inf_logvar"), "posterior", len(cfg.dense_g_z))
            + linear("mlp_gate.linear1", "mlp_gate", 0) + linear("mlp_gate.linear2", "mlp_gate", 1)
            + linear("mlp_z_prop.linear1", "mlp_z_prop", 0) + linear("mlp_z_prop.linear2", "mlp_z_prop", 1)
            + linear("prior_mean", "prior_mean", 0) + linear("prior_logvar.1", "prior_logvar", 0)
            + io.single_out_entries("mlp_z_x", "gen_out", "decoder", len(cfg.dense_z_x))
        )

    def params(self, variables: Any) -> Params:
        P = base.params_tree(variables)
        posterior = base.read_mlp(P["posterior"])
        n_avg = 3.0 if self.cfg.bidir_gx else 2.0
        first = posterior[0]
        gate, prop = base.read_mlp(P["mlp_gate"]), base.read_mlp(P["mlp_z_prop"])
        mean = base.read_mlp(P["prior_mean"])[0]
        trans_in = Linear(jnp.concatenate([gate[0].kernel, prop[0].kernel, mean.kernel], 1),
                          jnp.concatenate([gate[0].bias, prop[0].bias, mean.bias]))
        return matmul.cast_kernels(Params(
            base.read_mlp(P.get("mlp_x_gx")), base.read_lstm(P["rnn_gx"]),
            base.read_lstm(P["rnn_gx_reverse"]) if self.cfg.bidir_gx else None,
            base.read_mlp(P["mlp_ztm1_g"]), posterior,
            Linear(first.kernel / n_avg, first.bias), first.kernel / n_avg,
            trans_in, gate[1], prop[1], base.read_mlp(P["prior_logvar"])[0], base.read_mlp(P["decoder"]),
        ), self.cfg.matmul_dtype)

    def initial_carry(self, p: Params, n: int, dtype=jnp.float32) -> Carry:
        return jnp.zeros((n, self.cfg.z_dim), dtype)

    def hoist(self, p: Params, x: Float[Array, "b t f"], carry: Carry, drop: Dropout,
              need_prior: bool, lengths: Array | None = None) -> tuple[Data, None]:
        cfg = self.cfg
        # MLP_x_gx batch-major through the wide input; its (narrower) output is made time-major.
        a = base.time_major(base.mlp(p.mlp_x_gx, x, self.act, drop=drop))
        if cfg.bidir_gx:
            g = base.run_bilstm(p.rnn_gx, p.rnn_gx_reverse, a, unroll=cfg.unroll, lengths=lengths)[0]
            g = g[..., :cfg.dim_rnn_gx] + g[..., cfg.dim_rnn_gx:]  # g_fwd + g_bwd
        else:
            g = cudnn_lstm.maybe_run_lstm(p.rnn_gx, a, reverse=True, impl=cfg.lstm_impl, unroll=cfg.unroll,
                                          lengths=lengths)[0]
        return Data(base.dense(p.post_g, g)), None

    def enter(self, p: Params, carry: Carry, data: Data | None, hoisted: bool,
              drop: Dropout) -> tuple[Carry, None]:
        return carry, None

    def transition(self, p: Params, z_prev: Float[Array, "... z"]) -> tuple[Array, Array]:
        """The gated transition p(z_t | z_{t-1}): (loc, clipped log-variance), any leading shape."""
        Z = self.cfg.z_dim
        pre = base.dense(p.trans_in, z_prev)
        gate = jax.nn.sigmoid(base.dense(p.gate_out, jax.nn.relu(pre[..., :Z])))
        prop = base.dense(p.prop_out, jax.nn.relu(pre[..., Z:2 * Z]))
        loc = (1.0 - gate) * pre[..., 2 * Z:] + gate * prop
        logvar = log_softplus(base.dense(p.prior_logvar, jax.nn.relu(prop)))
        return loc, logvar.clip(-self.cfg.logvar_clip, self.cfg.logvar_clip)

    def latent(self, p: Params, carry: Carry, ctx: None, data: Data | None, noise: Array,
               posterior: bool, temperature, drop: Dropout) -> Latent:
        cfg = self.cfg
        if not posterior:
            loc, logvar = self.transition(p, carry)
            return Latent(base.sample_prior(loc, logvar, noise, temperature))
        m = base.mlp(p.mlp_ztm1_g, carry, self.act, drop=drop)  # tanh after linear_last too
        a = base.finish_layer(data.pre_post + base.mm(m, p.post_m), p.posterior[1:], self.act, drop)
        mean, logvar = base.heads(a, cfg.z_dim, cfg.logvar_clip)
        return Latent(base.sample_posterior(mean, logvar, noise), mean, logvar)

    def _decoder(self, p: Params, z: Float[Array, "... z"], drop: Dropout) -> Float[Array, "... o"]:
        return base.decoder_out(self.cfg, base.mlp(p.decoder, z, self.act, final_act=False, drop=drop))

    def emit(self, p: Params, ctx: None, zf: Array, drop: Dropout) -> Array:
        return self._decoder(p, zf, drop)

    def frame_in(self, p: Params, x: Array, drop: Dropout) -> Array:
        return x  # read by nothing: x never enters the generative recurrence

    def leave(self, p: Params, carry: Carry, ctx: None, zf: Array, frame: Array | None,
              drop: Dropout) -> Carry:
        return zf

    def record(self, ctx: None, zf: Array) -> None:
        return None

    def decode(self, p: Params, z: Float[Array, "t b z"], carry: Carry, drop: Dropout) -> tuple[Array, Carry]:
        # Batch-major: only the narrow z is transposed, not the decoder's wide output.
        return self._decoder(p, base.time_major(z), drop), z[-1]

    def finish(self, p: Params, rec, z, carry0: Carry, drop: Dropout, x_out=None, lengths=None):
        z_prev = base.time_major(jnp.concatenate([carry0[None].astype(z.dtype), z[:-1]], axis=0))
        loc, logvar = self.transition(p, z_prev)
        x_out = self.decode(p, z, carry0, drop)[0] if x_out is None else base.time_major(x_out)
        return loc, logvar, x_out, None
