"""One time step of each recurrence (VRNN, SRNN's LSTMs and latent chain), nothing else.

Cells hold no parameters: the model passes the weights they need as a broadcast argument and
the step-independent parts of every layer already computed for all frames (``pre_*`` inputs).
They run under ``flax.linen.scan`` so that a 'dropout' stream, when used, is split per step.
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn

from dvae_jax import distributions, layers
from dvae_jax.typing import Array


def scanned(step_cls, *, name: str, unroll: int = 1, reverse: bool = False, **kwargs) -> nn.Module:
    """``step_cls`` run by ``nn.scan`` over the leading axis of its inputs, its weights broadcast.

    'dropout' is listed in ``split_rngs``: a stream left out would silently repeat the same
    mask at every step (tested).
    """
    return nn.scan(
        step_cls,
        variable_broadcast="params",
        split_rngs={"params": False, "dropout": True},
        in_axes=(0, nn.broadcast),
        out_axes=0,
        unroll=unroll,
        reverse=reverse,
    )(name=name, **kwargs)


def _clip(logvar: Array, clip: float) -> Array:
    return logvar.clip(-clip, clip)


class _Step(nn.Module):
    """Shared settings of the cells."""

    activation: str = "tanh"
    z_dim: int = 16
    logvar_clip: float = 40.0
    dropout_p: float = 0.0
    deterministic: bool = True

    def dropout(self):
        if self.dropout_p <= 0.0 or self.deterministic:
            return None
        return lambda x: nn.Dropout(self.dropout_p, deterministic=False)(x)

    def head(self, w0_part: Array, rest: list, pre: Array, prev: Array) -> tuple[Array, Array]:
        """Finishes a layer fed [known_t, prev]: pre + prev @ w0_part, then the rest of its MLP,
        and splits the linear head into (mean, clipped log-variance)."""
        act = layers.activation(self.activation)
        drop = self.dropout()
        a = pre if w0_part is None else pre + prev @ w0_part
        if rest:
            a = act(a)
            if drop is not None:
                a = drop(a)
            a = layers.mlp(rest, a, act, final_act=False, dropout=drop)
        mean, logvar = a[..., : self.z_dim], a[..., self.z_dim :]
        return mean, _clip(logvar, self.logvar_clip)


class LSTMStep(nn.Module):
    """LSTM step whose input projection (x W_i + b_i + b_h) was computed before the scan."""

    @nn.compact
    def __call__(self, carry: tuple[Array, Array], pre_gates: Array, wh: Array):
        h, c = carry
        h, c = layers.lstm_gates(pre_gates + h @ wh, c)
        return (h, c), h


class VRNNStep(_Step):
    """VRNN step t: posterior q(z_t | x_t, h_t), sample z_t, phi_z(z_t), h_{t+1} = LSTM(...).

    Scanned inputs: ``pre_post`` = phi_x(x_t) part of the posterior's first layer (bias in),
    ``pre_lstm`` = phi_x(x_t) part of the first LSTM layer's gates (biases in), ``eps`` ~ N(0, I).
    Outputs per step: h_t (top layer, before the update), z_t, phi_z(z_t), mean_q, logvar_q.
    """

    @nn.compact
    def __call__(self, carry, xs: dict[str, Array], w: dict[str, Any]):
        hs, cs = carry
        act = layers.activation(self.activation)
        h_top = hs[-1]
        h_gates = None
        if "h_cat" in w:
            # One layer: h_t feeds both the posterior and the LSTM, so a single product with
            # the concatenated kernels [post_h | W_h] replaces two (fewer, larger matmuls, forward
            # and backward).
            n_post = w["post_h"].shape[1]
            both = h_top @ w["h_cat"]
            mean_q, logvar_q = self.head(None, w["post_rest"], xs["pre_post"] + both[..., :n_post], None)
            h_gates = both[..., n_post:]
        else:
            mean_q, logvar_q = self.head(w["post_h"], w["post_rest"], xs["pre_post"], h_top)
        z = distributions.gaussian_sample(mean_q, logvar_q, xs["eps"])
        phi_z = layers.mlp(w["phi_z"], z, act, final_act=True, dropout=self.dropout())
        new_h, new_c = [], []
        inp = None
        for i, (p, h, c) in enumerate(zip(w["lstm"], hs, cs)):
            if i == 0:
                hw = h_gates if h_gates is not None else h @ p["wh"]
                gates = xs["pre_lstm"] + phi_z @ w["lstm_wz"] + hw
            else:
                gates = layers.lstm_input_projection(p, inp) + h @ p["wh"]
            h, c = layers.lstm_gates(gates, c)
            new_h.append(h)
            new_c.append(c)
            inp = h
        out = {"h": h_top, "z": z, "phi_z": phi_z, "mean_q": mean_q, "logvar_q": logvar_q}
        return (tuple(new_h), tuple(new_c)), out


class SRNNLatentStep(_Step):
    """SRNN step t of the latent chain: q(z_t | z_{t-1}, g_t), sample z_t.

    Scanned inputs: ``pre_post`` = g_t part of MLP_gz_z's first layer (bias in), ``eps``, and with
    Resq ``pre_prior`` = h_t part of MLP_hz_z's first layer: the posterior mean is then the prior
    mean given (z_{t-1}, h_t) plus the posterior network's output.
    """

    resq: bool = False

    @nn.compact
    def __call__(self, z_prev: Array, xs: dict[str, Array], w: dict[str, Any]):
        mean_q, logvar_q = self.head(w["post_z"], w["post_rest"], xs["pre_post"], z_prev)
        if self.resq:
            mean_p, _ = self.head(w["prior_z"], w["prior_rest"], xs["pre_prior"], z_prev)
            mean_q = mean_p + mean_q
        z = distributions.gaussian_sample(mean_q, logvar_q, xs["eps"])
        return z, {"z": z, "mean_q": mean_q, "logvar_q": logvar_q}
