"""What every DVAE shares: typed parameters, the layers' arithmetic, heads, priors, and the contract
a model fulfils so that the drivers (dvae_jax/drivers.py) can train and run it.

Parameters are stored as the Flax variables tree that checkpoints and the review's import/export
use ({'params': {'phi_x': {'linear0': {'kernel', 'bias'}}, ...}}, kernels (in, out)); a model reads
them through typed NamedTuples (:class:`Linear`, :class:`LSTMLayer`, the model's own ``Params``).

A model is one module that provides, as pure functions of its typed parameters:
  - ``sequence`` (models with a sequence-level latent only, DSAE's v): that latent, put in the
    carry before anything else;
  - ``hoist``: everything computable from the real frames for all frames at once (one batched
    matmul per layer, data-driven LSTMs included) -> per-step ``Data`` (time-major);
  - per-step pieces for what depends on the previous step: ``enter`` (deterministic recurrence
    before the latent, if any), ``latent`` (posterior or prior sample), ``absorb`` (recurrence
    that reads z_t before the decoder, STORN's and RVAE's decoder LSTM), ``emit`` (decoder
    head), ``frame_in`` (a frame's share of the recurrence), ``leave`` (recurrence after the
    latent);
  - ``finish``: the prior and decoder of every frame after the scan, batched (and the decoder's
    recurrent state after the last frame when the scan did not step it);
  - ``decode`` (models whose recurrences never read a frame, ``feeds_back_x = False``): the
    decoder of a whole latent sequence, which generation uses after the latent chain.
The four drivers (teacher-forced ELBO pass, free-running and primed generation, scheduled
sampling) are written once over these pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn
from jaxtyping import Array, Float

from dvae_jax.config import LIKELIHOODS, PRIORS, ModelConfig
from dvae_jax.errors import ConfigError
from dvae_jax.models import lstm_vjp
from dvae_jax.models.matmul import mm

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    # The SRNN code's clipped_very_leaky_rectify: leaky ReLU of slope 1/3, clipped to [-3, 3].
    "clipped_leaky": lambda x: jnp.clip(jnp.where(x > 0, x, x / 3.0), -3.0, 3.0),
}

Dropout = Callable[[Array], Array] | None


# ---------------------------------------------------------------------------------------------
# Typed parameters


class Linear(NamedTuple):
    """A dense layer; the kernel is the review's (out, in) weight transposed."""

    kernel: Float[Array, "i o"]
    bias: Float[Array, " o"]


class LSTMLayer(NamedTuple):
    """One recurrent layer in PyTorch's layout. An LSTM (wh (H, 4H)): gates stacked i, f, g, o,
    both biases added. A GRU (wh (H, 3H), model.rnn_cell=gru): gates r, z, n as torch.nn.GRU,
    n = tanh(x W_in + b_in + r (h W_hn + b_hn)), h' = (1 - z) n + z h. The functions named lstm_*
    below serve both cells; the shapes say which."""

    wi: Float[Array, "i 4h"]
    wh: Float[Array, "h 4h"]
    bi: Float[Array, " 4h"]
    bh: Float[Array, " 4h"]


MLP = tuple[Linear, ...]
LSTM = tuple[LSTMLayer, ...]


class Latent(NamedTuple):
    """One step's latent: the sample and, when drawn from the posterior, its parameters."""

    z: Float[Array, "b z"]
    mean_q: Float[Array, "b z"] | None = None
    logvar_q: Float[Array, "b z"] | None = None


class Outputs(NamedTuple):
    """Everything the ELBO needs, batch-major (b, t, ...)."""

    z: Float[Array, "b t z"]  # posterior sample
    mean_q: Float[Array, "b t z"]
    logvar_q: Float[Array, "b t z"]
    prior_loc: Float[Array, "b t z"]  # Gaussian mean or Student-t location
    prior_logvar: Float[Array, "b t z"]  # log-variance (Gaussian) or 2 log scale (Student-t)
    x_out: Float[Array, "b t o"]  # IS log-variance (f), or Gaussian mean (f) [+ log-variance (f)]
    nu: Float[Array, " z"] | None  # Student-t degrees of freedom, None for a Gaussian prior
    # A sequence-level latent (DSAE's v, (b, v)) with its posterior, prior N(0, I); else None.
    seq: Latent | None = None


def read_mlp(tree: dict | None) -> MLP:
    """The ``linear0..n`` entries of an MLP (an MLP without layers has no entry)."""
    tree = tree or {}
    return tuple(Linear(tree[f"linear{i}"]["kernel"], tree[f"linear{i}"]["bias"]) for i in range(len(tree)))


def read_lstm(tree: dict) -> LSTM:
    return tuple(LSTMLayer(**{k: tree[f"layer{i}"][k] for k in LSTMLayer._fields}) for i in range(len(tree)))


def head_layout(name: str, sizes: Sequence[int], separate: bool) -> tuple[tuple[str, tuple], ...]:
    """The layout of a latent head ``sizes[0] -> ... -> 2z`` ([mean | log-variance]): one MLP, or
    with ``separate`` two MLPs of the same hidden sizes, ``name`` (mean) and ``name_logvar``."""
    if not separate:
        return ((name, ("mlp", tuple(sizes))),)
    half = (*sizes[:-1], sizes[-1] // 2)
    return (name, ("mlp", half)), (f"{name}_logvar", ("mlp", half))


def read_heads(tree: dict, name: str) -> MLP:
    """A latent head as one MLP whatever its layout (:func:`head_layout`). Two separate MLPs
    become one whose first layer is theirs side by side (both read the same input) and whose
    later layers are block-diagonal, so that its output is [mean | log-variance] and the model
    code is the same for both layouts (the zero blocks cost the later layers twice their FLOPs)."""
    mean = read_mlp(tree.get(name))
    if f"{name}_logvar" not in tree:
        return mean
    var = read_mlp(tree[f"{name}_logvar"])
    first = Linear(jnp.concatenate([mean[0].kernel, var[0].kernel], 1),
                   jnp.concatenate([mean[0].bias, var[0].bias]))
    rest = tuple(Linear(jax.scipy.linalg.block_diag(m.kernel, v.kernel), jnp.concatenate([m.bias, v.bias]))
                 for m, v in zip(mean[1:], var[1:]))
    return (first, *rest)


def params_tree(variables: Any) -> dict:
    """The ``params`` collection of Flax variables (or the tree itself)."""
    return variables.get("params", variables)


# ---------------------------------------------------------------------------------------------
# Declaration (Flax holders with the review's names and PyTorch's default initialisation)


def _torch_uniform(fan_in: int) -> Callable:
    """PyTorch's default Linear / LSTM init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class DeclareLinear(nn.Module):
    """Declares a dense layer's kernel (in, out) and bias (out,)."""

    in_dim: int
    out_dim: int

    @nn.compact
    def __call__(self) -> None:
        init = _torch_uniform(self.in_dim)
        self.param("kernel", init, (self.in_dim, self.out_dim))
        self.param("bias", init, (self.out_dim,))


class DeclareMLP(nn.Module):
    """Declares layers ``linear0..n`` mapping sizes[0] -> sizes[1] -> ... -> sizes[-1]."""

    sizes: Sequence[int]

    @nn.compact
    def __call__(self) -> None:
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            DeclareLinear(a, b, name=f"linear{i}")()


class DeclareLSTMLayer(nn.Module):
    """Declares one recurrent layer in PyTorch's layout: wi (in, GH), wh (H, GH), bi, bh (GH,),
    G = 4 gates for an LSTM, 3 for a GRU."""

    in_dim: int
    hidden: int
    gates: int = 4

    @nn.compact
    def __call__(self) -> None:
        init = _torch_uniform(self.hidden)
        four_h = self.gates * self.hidden
        self.param("wi", init, (self.in_dim, four_h))
        self.param("wh", init, (self.hidden, four_h))
        self.param("bi", init, (four_h,))
        self.param("bh", init, (four_h,))


CELL_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


class DeclareLSTM(nn.Module):
    """Declares a stacked LSTM ``layer0..`` (gates i, f, g, o; both biases, as nn.LSTM), a
    stacked GRU with ``cell='gru'`` (gates r, z, n, as nn.GRU) or a stacked Elman RNN with
    ``cell='rnn'`` (h' = tanh(x W_i + b_i + h W_h + b_h), as nn.RNN)."""

    in_dim: int
    hidden: int
    num_layers: int = 1
    cell: str = "lstm"
    bidir: bool = False  # one direction of a bidirectional stack: layers >= 1 read [fwd, bwd] (2H)

    @nn.compact
    def __call__(self) -> None:
        gates = CELL_GATES[self.cell]
        above = 2 * self.hidden if self.bidir else self.hidden
        for i in range(self.num_layers):
            DeclareLSTMLayer(self.in_dim if i == 0 else above, self.hidden, gates, name=f"layer{i}")()


class Declare(nn.Module):
    """Declares a model's parameter tree from its layout: {name: DeclareMLP/DeclareLSTM spec}, and
    the learned Student-t degrees of freedom (``prior_nu``: nu = 2 + softplus(raw))."""

    layout: tuple[tuple[str, Any], ...]
    nu_init: float | None = None  # initial nu when learned, else None
    z_dim: int = 0

    @nn.compact
    def __call__(self) -> None:
        for name, spec in self.layout:
            kind, args = spec[0], spec[1:]
            (DeclareMLP(args[0], name=name) if kind == "mlp" else DeclareLSTM(*args, name=name))()
        if self.nu_init is not None:
            raw = math.log(math.expm1(max(self.nu_init - 2.0, 1e-3)))  # softplus^-1(nu - 2)
            self.param("prior_nu", lambda k, s: jnp.full(s, raw, jnp.float32), (self.z_dim,))


# ---------------------------------------------------------------------------------------------
# The layers' arithmetic (pure)


def activation(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.activation={name!r}: must be one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dense(p: Linear, x: Float[Array, "... i"]) -> Float[Array, "... o"]:
    return mm(x, p.kernel) + p.bias


def mlp(
    layers: Sequence[Linear], x: Float[Array, "... i"], act: Callable[[Array], Array],
    final_act: bool = True, drop: Dropout = None,
) -> Float[Array, "... o"]:
    """Applies every layer, with the activation (and dropout) after each but, without
    ``final_act``, the last (a linear output head)."""
    n = len(layers)
    for i, layer in enumerate(layers):
        x = dense(layer, x)
        if final_act or i < n - 1:
            x = act(x)
            if drop is not None:
                x = drop(x)
    return x


def finish_layer(
    pre: Float[Array, "... o"], rest: Sequence[Linear], act: Callable[[Array], Array], drop: Dropout = None
) -> Float[Array, "... o2"]:
    """Completes an MLP head whose first layer's pre-activation is ``pre``: the activation, then
    the remaining layers, the last one linear."""
    if not rest:
        return pre
    a = act(pre)
    if drop is not None:
        a = drop(a)
    return mlp(rest, a, act, final_act=False, drop=drop)


def split_first(p: Linear, n_a: int) -> tuple[Linear, Float[Array, "b o"]]:
    """A layer fed [a, b] as (the a-part with the bias, the b-part kernel): W_a a + W_b b."""
    return Linear(p.kernel[:n_a], p.bias), p.kernel[n_a:]


def lstm_gates(gates: Float[Array, "... 4h"], c: Float[Array, "... h"]) -> tuple[Array, Array]:
    """LSTM update from pre-activations in PyTorch's gate order i, f, g, o: (h, c)."""
    return lstm_vjp.cell(lstm_vjp.activations(gates), c)


def is_gru(p: LSTMLayer) -> bool:
    return p.wh.shape[1] == 3 * p.wh.shape[0]


def is_elman(p: LSTMLayer) -> bool:
    """A tanh nn.RNN layer (one gate: wh (H, H))."""
    return p.wh.shape[1] == p.wh.shape[0]


def input_bias(p: LSTMLayer) -> Float[Array, " gh"]:
    """The biases that add to x W_i: both (LSTM); a GRU's b_hn stays with h W_hn (r scales it)."""
    if not is_gru(p):
        return p.bi + p.bh
    h = p.wh.shape[0]
    return p.bi + p.bh.at[2 * h:].set(0.0)


def lstm_input(p: LSTMLayer, x: Float[Array, "... i"]) -> Float[Array, "... 4h"]:
    """The part of the gates that does not depend on the state: x W_i + b_i + b_h (a GRU's b_hn
    excepted)."""
    return mm(x, p.wi) + input_bias(p)


def cell_update(p: LSTMLayer, pre: Array, hw: Array, h: Array, c: Array) -> tuple[Array, Array]:
    """One cell update from the input share ``pre`` (:func:`lstm_input`) and ``hw`` = h W_h:
    (h, c). A GRU or an Elman RNN has no cell state: ``c`` passes through unchanged."""
    if is_elman(p):
        return jnp.tanh(pre + hw), c
    if not is_gru(p):
        return lstm_gates(pre + hw, c)
    n_h = p.wh.shape[0]
    r, z = jnp.split(jax.nn.sigmoid(pre[..., :2 * n_h] + hw[..., :2 * n_h]), 2, axis=-1)
    n = jnp.tanh(pre[..., 2 * n_h:] + r * (hw[..., 2 * n_h:] + p.bh[2 * n_h:]))
    return (1.0 - z) * n + z * h, c


class LSTMState(NamedTuple):
    """A stacked LSTM's state: one (b, H) array per layer for h and for c."""

    h: tuple[Float[Array, "b h"], ...]
    c: tuple[Float[Array, "b h"], ...]


def lstm_zeros(n: int, hidden: int, num_layers: int, dtype=jnp.float32) -> LSTMState:
    zeros = tuple(jnp.zeros((n, hidden), dtype) for _ in range(num_layers))
    return LSTMState(zeros, zeros)


def lstm_step(
    layers: LSTM, state: LSTMState, pre0: Float[Array, "b 4h"], h0_gates: Array | None = None
) -> LSTMState:
    """One step of a stacked LSTM whose first layer's input projection ``pre0`` is given (and,
    optionally, its recurrent share ``h0_gates`` = h W_h, when the caller fused that product)."""
    new_h, new_c = [], []
    inp = None
    for i, (p, h, c) in enumerate(zip(layers, state.h, state.c)):
        if i == 0:
            h, c = cell_update(p, pre0, mm(h, p.wh) if h0_gates is None else h0_gates, h, c)
        else:
            h, c = cell_update(p, lstm_input(p, inp), mm(h, p.wh), h, c)
        new_h.append(h)
        new_c.append(c)
        inp = h
    return LSTMState(tuple(new_h), tuple(new_c))


def align_end(x: Float[Array, "t b ..."], lengths: Array) -> Float[Array, "t b ..."]:
    """Rows padded at the end (``lengths`` real frames each) rolled so that their real frames
    end at the last step (the padding comes first)."""
    t_len = x.shape[0]
    idx = (jnp.arange(t_len)[:, None] - (t_len - lengths)[None, :]) % t_len
    return jnp.take_along_axis(x, idx.reshape(*idx.shape, *(1,) * (x.ndim - 2)), axis=0)


def align_start(x: Float[Array, "t b ..."], lengths: Array) -> Float[Array, "t b ..."]:
    """The inverse of :func:`align_end`."""
    t_len = x.shape[0]
    idx = (jnp.arange(t_len)[:, None] + (t_len - lengths)[None, :]) % t_len
    return jnp.take_along_axis(x, idx.reshape(*idx.shape, *(1,) * (x.ndim - 2)), axis=0)


def _layer(p: LSTMLayer, x: Array, h0: Array, c0: Array, reverse: bool, unroll: int) -> tuple[Array, Array, Array]:
    """One recurrent layer over known inputs: (outputs, final h, final c)."""
    if not is_gru(p) and not is_elman(p):  # the hand-written backward pass (models/lstm_vjp.py)
        return lstm_vjp.lstm_layer(p.wh, lstm_input(p, x), h0, c0, reverse, unroll)

    def step(carry, pre):
        h, c = cell_update(p, pre, mm(carry[0], p.wh), carry[0], carry[1])
        return (h, c), h

    (h, c), out = jax.lax.scan(step, (h0, c0), lstm_input(p, x), reverse=reverse, unroll=unroll)
    return out, h, c


def run_lstm(
    layers: LSTM, inputs: Float[Array, "t b i"], state: LSTMState | None = None,
    reverse: bool = False, unroll: int = 1, lengths: Array | None = None,
) -> tuple[Float[Array, "t b h"], LSTMState]:
    """A stacked LSTM (or GRU, or Elman RNN) over known inputs, layer by layer: each layer's input
    projection is one batched matmul over all frames and only h W_h stays in the scan; an LSTM
    layer's backward pass is hand-written (:mod:`dvae_jax.models.lstm_vjp`: the kernel's
    gradient as one product after the loop). Returns (top outputs, final state).

    ``lengths`` (b,): rows padded at the end (whole utterances in a batch). The outputs at real
    frames are then exact in both directions: a reverse run starts at each row's last real frame
    (:func:`align_end`), and the final state's h is each row's state after its last real frame
    (forward) or its first (reverse); the final c is NaN there (not tracked)."""
    n = inputs.shape[1]
    hidden = layers[0].wh.shape[0]
    if state is None:
        state = lstm_zeros(n, hidden, len(layers), inputs.dtype)
    x = inputs
    final_h, final_c = [], []
    for i, p in enumerate(layers):
        if lengths is None:
            x, h, c = _layer(p, x, state.h[i], state.c[i], reverse, unroll)
        elif reverse:
            x = align_start(_layer(p, align_end(x, lengths), state.h[i], state.c[i], True, unroll)[0], lengths)
            h, c = x[0], jnp.full_like(x[0], jnp.nan)
        else:
            x = _layer(p, x, state.h[i], state.c[i], False, unroll)[0]
            h = jnp.take_along_axis(x, (lengths - 1)[None, :, None], axis=0)[0]
            c = jnp.full_like(h, jnp.nan)
        final_h.append(h)
        final_c.append(c)
    return x, LSTMState(tuple(final_h), tuple(final_c))


def run_bilstm(
    fwd: LSTM, bwd: LSTM, inputs: Float[Array, "t b i"], unroll: int = 1, lengths: Array | None = None,
) -> tuple[Float[Array, "t b 2h"], LSTMState, LSTMState]:
    """A bidirectional stacked recurrence as torch's ``bidirectional=True``: layer k of each
    direction reads the concatenation [forward, backward] of layer k-1's outputs. Returns
    (the top layer's [forward | backward] outputs, forward final state (after the last frame),
    backward final state (after the first frame)); ``lengths`` as :func:`run_lstm`'s."""
    x = inputs
    states_f, states_b = [], []
    for f, b in zip(fwd, bwd):
        out_f, st_f = run_lstm((f,), x, unroll=unroll, lengths=lengths)
        out_b, st_b = run_lstm((b,), x, reverse=True, unroll=unroll, lengths=lengths)
        x = jnp.concatenate([out_f, out_b], axis=-1)
        states_f.append(st_f)
        states_b.append(st_b)

    def stack(states):
        return LSTMState(tuple(s.h[0] for s in states), tuple(s.c[0] for s in states))

    return x, stack(states_f), stack(states_b)


def make_dropout(rate: float, key: Array | None) -> Dropout:
    """Inverted dropout drawing a fresh mask at each call (a new key folded in per call), or
    None when ``key`` is None or the rate is 0 (deterministic)."""
    if key is None or rate <= 0.0:
        return None
    calls = [0]

    def drop(x: Array) -> Array:
        calls[0] += 1
        keep = jax.random.bernoulli(jax.random.fold_in(key, calls[0]), 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0)

    return drop


# ---------------------------------------------------------------------------------------------
# Heads and distributions' parameters


def heads(a: Float[Array, "... 2z"], z_dim: int, clip: float) -> tuple[Array, Array]:
    """(mean, clipped log-variance) from a linear head [mean | logvar]."""
    return a[..., :z_dim], a[..., z_dim:].clip(-clip, clip)


def decoder_out_dim(cfg: ModelConfig) -> int:
    if cfg.likelihood in ("itakura_saito", "bernoulli"):
        return cfg.x_dim
    if cfg.likelihood == "gaussian":
        return 2 * cfg.x_dim if cfg.learn_x_var else cfg.x_dim
    raise ConfigError(f"model.likelihood={cfg.likelihood!r}: must be one of {LIKELIHOODS}")


def decoder_out(cfg: ModelConfig, a: Float[Array, "... o"]) -> Float[Array, "... o"]:
    """The decoder head with every log-variance clipped (IS: all of it; Gaussian: its second half;
    Bernoulli logits are left as they are: the log-sigmoid loss is stable for any finite logit)."""
    clip = cfg.logvar_clip
    if cfg.likelihood == "itakura_saito":
        return a.clip(-clip, clip)
    if cfg.likelihood == "bernoulli":
        return a
    if cfg.learn_x_var:
        return jnp.concatenate([a[..., : cfg.x_dim], a[..., cfg.x_dim :].clip(-clip, clip)], -1)
    return a


def decode_frames(
    cfg: ModelConfig, x_out: Float[Array, "... o"], decode: str = "mean", noise_x: Array | None = None
) -> Float[Array, "... f"]:
    """Decoder output -> features. Itakura-Saito: mean decoding gives exp(v), the expected power;
    sampling gives exp(v) * E, E ~ Exponential(1) (``noise_x``). Gaussian: the mean, or
    mean + std * N(0, 1). Bernoulli: the probabilities sigmoid(logits), or a 0/1 draw
    1[U < sigmoid(logits)], U ~ Uniform(0, 1) (``noise_x``)."""
    if cfg.likelihood == "itakura_saito":
        power = jnp.exp(x_out)
        return power if decode == "mean" else power * noise_x
    if cfg.likelihood == "bernoulli":
        prob = jax.nn.sigmoid(x_out)
        return prob if decode == "mean" else (noise_x < prob).astype(prob.dtype)
    mean = x_out[..., : cfg.x_dim]
    if decode == "mean":
        return mean
    logvar = x_out[..., cfg.x_dim :] if cfg.learn_x_var else jnp.full_like(mean, cfg.fixed_x_logvar)
    return mean + jnp.exp(0.5 * logvar) * noise_x


def prior_nu(cfg: ModelConfig, variables: Any) -> Float[Array, " z"] | None:
    """Student-t degrees of freedom: learned (2 + softplus(raw)) or cfg.nu; None for a Gaussian."""
    if cfg.prior != "student_t":
        return None
    if cfg.learn_nu:
        return 2.0 + jax.nn.softplus(params_tree(variables)["prior_nu"])
    return jnp.full((cfg.z_dim,), cfg.nu)  # default float type: float64 under jax_enable_x64


def sample_prior(loc: Array, logvar: Array, noise: Array, temperature: Array | float) -> Array:
    """loc + temperature * scale * noise, scale = exp(logvar / 2) (a Student-t prior stores
    2 log scale in the log-variance slot, so one formula holds; ``noise`` is standard)."""
    return loc + temperature * jnp.exp(0.5 * logvar) * noise


def sample_posterior(mean: Array, logvar: Array, eps: Array) -> Array:
    """Reparameterised mean + exp(logvar / 2) * eps, eps ~ N(0, I) drawn by the caller."""
    return mean + jnp.exp(0.5 * logvar) * eps


def check(cfg: ModelConfig) -> None:
    """The model options every DVAE reads (one line naming the key when one is wrong)."""
    if cfg.prior not in PRIORS:
        raise ConfigError(f"model.prior={cfg.prior!r}: must be one of {PRIORS}")
    if cfg.kl_estimator not in ("mc", "entropy"):
        raise ConfigError(f"model.kl_estimator={cfg.kl_estimator!r}: must be 'mc' or 'entropy'")
    if cfg.prior == "student_t" and cfg.nu <= 0:
        raise ConfigError(f"model.nu={cfg.nu}: must be > 0 (> 2 for finite variance)")
    activation(cfg.activation)
    decoder_out_dim(cfg)


def require_review_cells(cfg: ModelConfig, name: str) -> None:
    """For the review's models that have LSTMs and two linear heads only: model.rnn_cell=gru and
    model.separate_heads=true are one line naming the key."""
    if cfg.separate_heads:
        raise ConfigError(f"model.separate_heads=true: {name} has the review's two linear heads on one "
                          f"MLP only; set model.separate_heads=false")
    if cfg.rnn_cell != "lstm":
        raise ConfigError(f"model.rnn_cell={cfg.rnn_cell!r}: {name} supports 'lstm' only (the review's)")


def time_major(a: Array | None) -> Array | None:
    """(b, t, ...) <-> (t, b, ...)."""
    return None if a is None else jnp.swapaxes(a, 0, 1)


# ---------------------------------------------------------------------------------------------
# The contract of a model


class DVAE:
    """Base of every model: its configuration, the declaration of its parameters and the pure
    per-step pieces the drivers compose (see the module docstring). Subclasses are one module
    each (vrnn.py, srnn.py) and define every method that raises NotImplementedError here.

    Shapes: ``x`` (b, t, f) batch-major; per-step data ``Data`` and scan outputs time-major
    (t, b, ...); ``Carry`` the recurrent state between frames (b, ...).
    """

    name: str = ""
    # False: no recurrence reads a frame (VAE, DKF, RVAE, DSAE): generation runs the latent chain,
    # then decodes every frame at once (:meth:`decode`); scheduled sampling has nothing to feed.
    feeds_back_x: bool = True
    # False: the decoder of frame t reads later latents (RVAE non-causal's bidirectional LSTM):
    # primed generation decodes the prime's latents and the continuation's together.
    causal_decoder: bool = True
    # True: the review's LSTM-only, two-linear-head model (VAE, DKF, RVAE, DSAE): model.rnn_cell=gru
    # and model.separate_heads=true are refused in one line (require_review_cells).
    review_cells_only: bool = False

    @classmethod
    def noise_dim(cls, cfg: ModelConfig) -> int:
        """Standard noise per frame: z_t's; a sequence-level latent's (DSAE's v, read at frame 0)
        follows it."""
        return cfg.z_dim

    def __init__(self, cfg: ModelConfig):
        check(cfg)
        if self.review_cells_only:
            require_review_cells(cfg, self.name)
        self.cfg = cfg
        self.act = activation(cfg.activation)

    # -- parameters
    def layout(self) -> tuple[tuple[str, tuple], ...]:
        """((name, ('mlp', sizes) | ('lstm', in_dim, hidden, layers)), ...) in the review's names."""
        raise NotImplementedError

    def declare(self) -> Declare:
        cfg = self.cfg
        learned = cfg.prior == "student_t" and cfg.learn_nu
        return Declare(self.layout(), nu_init=cfg.nu if learned else None, z_dim=cfg.z_dim)

    def init(self, key: Array) -> dict:
        """Fresh Flax variables {'params': ...} (PyTorch's default initialisation)."""
        return jax.jit(self.declare().init)({"params": key})

    def params(self, variables: Any) -> Any:
        """The typed view (the model's ``Params``) of the stored tree."""
        raise NotImplementedError

    def review_names(self) -> list:
        """[interop.Entry(torch name, flax path, transform)] of the review's state_dict for this
        layout (built with dvae_jax/interop.py's helpers)."""
        raise NotImplementedError

    def nu(self, variables: Any) -> Array | None:
        return prior_nu(self.cfg, variables)

    # -- the recurrence, one step at a time
    def initial_carry(self, p: Any, n: int, dtype=jnp.float32) -> Any:
        """The state before the first frame (cold start)."""
        raise NotImplementedError

    def sequence(self, p: Any, x: Array | None, carry: Any, noise: Array, posterior: bool,
                 temperature: Array | float, drop: Dropout) -> tuple[Any, Latent | None]:
        """A sequence-level latent (DSAE's v): from the posterior given all of ``x`` (b, t, f), or
        the tempered prior when ``posterior`` is False (``x`` may then be None); ``noise`` (b, v)
        standard; ``lengths`` as :meth:`hoist`'s (passed only when given). Returns (the carry
        holding it, the Latent (b, v) or None). Default: none."""
        return carry, None

    def hoist(self, p: Any, x: Array, carry: Any, drop: Dropout, need_prior: bool,
              lengths: Array | None = None) -> tuple[Any, Any]:
        """Everything the real frames determine, for all frames at once: (Data (t, b, ...),
        aux for :meth:`close`). ``Data.frame`` is each real frame's share of the recurrence
        (:meth:`frame_in` of x_t); ``need_prior``: the prior will be sampled in the scan.
        ``lengths`` (b,): rows padded at the end (whole utterances); a recurrence that runs
        backward in time, or a summary of the whole sequence, must then start at or end with each
        row's last real frame (``run_lstm(..., lengths=lengths)``). The drivers pass it only when
        given, so a model that only looks back need not take it."""
        raise NotImplementedError

    def enter(self, p: Any, carry: Any, data: Any, hoisted: bool, drop: Dropout) -> tuple[Any, Any]:
        """Recurrence before the latent (the deterministic state of this frame): (carry, ctx).
        With ``hoisted`` the data path was computed by :meth:`hoist` and is read from ``data``."""
        raise NotImplementedError

    def latent(self, p: Any, carry: Any, ctx: Any, data: Any, noise: Array, posterior: bool,
               temperature: Array | float, drop: Dropout) -> Latent:
        """z_t from the posterior (``noise`` ~ N(0, I); needs ``data``) or the tempered prior."""
        raise NotImplementedError

    def z_features(self, p: Any, z: Array, drop: Dropout) -> Array:
        """What the decoder and the recurrence read of z_t (VRNN: phi_z(z_t))."""
        return z

    def absorb(self, p: Any, carry: Any, ctx: Any, zf: Array, hoisted: bool,
               drop: Dropout) -> tuple[Any, Any]:
        """Recurrence that reads z_t before the decoder (STORN's, RVAE's decoder LSTM): (carry,
        ctx for :meth:`emit`). With ``hoisted`` (teacher forcing) a model may leave it to
        :meth:`finish`, batched. Default: nothing."""
        return carry, ctx

    def emit(self, p: Any, ctx: Any, zf: Array, drop: Dropout) -> Array:
        """The decoder head for this frame (log-variances clipped)."""
        raise NotImplementedError

    def frame_in(self, p: Any, x: Array, drop: Dropout) -> Array:
        """A frame's share of the recurrence (any leading shape): what ``leave`` consumes."""
        raise NotImplementedError

    def leave(self, p: Any, carry: Any, ctx: Any, zf: Array, frame: Array, drop: Dropout) -> Any:
        """Recurrence after the latent: the carry for the next frame."""
        raise NotImplementedError

    def record(self, ctx: Any, zf: Array) -> Any:
        """What :meth:`finish` needs of each step (stacked time-major by the scan)."""
        raise NotImplementedError

    def finish(self, p: Any, rec: Any, z: Array, carry0: Any, drop: Dropout,
               x_out: Array | None = None) -> tuple[Array, Array, Array, Any]:
        """Prior (loc, logvar) and decoder output of every frame, batched, batch-major; the
        decoder is skipped when the scan already produced ``x_out`` (time-major). The fourth
        element is what :meth:`close` receives as ``end``: the state of a recurrence the scan did
        not step (a decoder LSTM run here, batched), or None. ``lengths`` as :meth:`hoist`'s
        (passed only when given: a decoder that looks ahead must take it)."""
        raise NotImplementedError

    def decode(self, p: Any, z: Float[Array, "t b z"], carry: Any, drop: Dropout) -> tuple[Array, Any]:
        """The decoder output (b, t, o) of a whole latent sequence (time-major) from ``carry``,
        the state before its first frame, and ``end`` for :meth:`close` (the decoder's recurrent
        state after the last frame, or None) (models with ``feeds_back_x = False``)."""
        raise NotImplementedError

    def close(self, carry: Any, aux: Any, hoisted: bool, end: Any = None) -> Any:
        """The final carry of a pass whose data path was hoisted: the scan's, with what
        :meth:`finish` returned as ``end`` (default: ``end`` replaces it when not None)."""
        return carry if end is None else end
