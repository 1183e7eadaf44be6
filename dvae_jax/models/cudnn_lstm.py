"""A stacked LSTM over known inputs through cuDNN (``jax.experimental.rnn.lstm``), a drop-in for
:func:`dvae_jax.models.base.run_lstm` on a CUDA GPU, for the recurrences fed by data only (SRNN's
LSTM_h over MLP_x_h(x_{t-1}) and LSTM_g, backwards, over MLP_hx_g([h_t, x_t])).

What ``jax.experimental.rnn`` (jax 0.10) provides and what this module relies on:
  - ``lstm(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout,
    bidirectional, precision)``: batch-major x (b, t, i), states (layers * directions, b, H),
    seq_lengths (b,) int32, one flat float32 weight vector; a custom VJP whose backward is cuDNN's.
    Its primitive has lowerings for CUDA (cuDNN) and ROCm (MIOpen, whose gate order differs) only:
    on CPU even tracing fails (the abstract evaluation asks the GPU plugin for workspace sizes), it
    has no batching rule (``jax.vmap`` over it raises NotImplementedError), float32 only, and
    refuses bfloat16 matmul precision. LSTM only: no GRU (cuDNN has one, JAX does not expose it).
  - the flat layout (``_get_params_shapes_in_lstm``, ``unpack_lstm_weights``): every layer's
    W_ih (4H, in) then W_hh (4H, H), layer after layer, then every layer's b_ih (4H,), b_hh (4H,);
    each matrix row-major in PyTorch's (out, in) orientation, gates stacked i, f, g, o. Ours are
    the same gates, same order, transposed (wi (in, 4H)), so :func:`pack` is transposes and a
    concatenation and :func:`unpack` its exact inverse (both biases kept apart, as cuDNN adds both).
  - ``lstm_ref``: its pure-JAX reference (scan per layer) fed by ``unpack_lstm_weights``; JAX's
    own GPU tests check ``lstm`` against it (tests/experimental_rnn_test.py, 1e-5 at float32
    matmul precision). :func:`run_lstm_reference` runs it through the same wrapping as
    :func:`run_lstm`, so that tests on CPU check our layout against JAX's
    (tests/test_cudnn_lstm.py).

A reverse-only LSTM is the forward one over the time-flipped sequence, flipped back: exact when
every sequence of the batch has the full length, which is what is passed (seq_lengths = t): the
models mask padded frames in the loss, not in the recurrence, as the scan path does. No dropout
inside: the data-driven LSTMs have none between their layers either (``dropout=0``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import rnn
from jaxtyping import Array, Float

from dvae_jax.config import LSTM_IMPLS
from dvae_jax.errors import ConfigError
from dvae_jax.models import base
from dvae_jax.models.base import LSTM, LSTMLayer, LSTMState

IMPLS = LSTM_IMPLS

# (x (b, t, i), h_0, c_0 (layers, b, H), packed weights, seq_lengths (b,), input_size, hidden_size,
#  num_layers) -> (y (b, t, H), h_n, c_n): rnn.lstm, or its reference for tests on CPU.
Kernel = Callable[..., tuple[Array, Array, Array]]


def _sizes(layers: LSTM) -> tuple[int, int, int]:
    """(input_size, hidden_size, num_layers) of a stacked LSTM that cuDNN can run.

    Raises:
        ValueError: no layer, a GRU layer, or shapes that are not one stacked LSTM.
    """
    if not layers:
        raise ValueError("cudnn_lstm: no layer to run")
    hidden = layers[0].wh.shape[0]
    for i, p in enumerate(layers):
        if base.is_gru(p):
            raise ValueError(f"cudnn_lstm: layer {i} is a GRU (wh {tuple(p.wh.shape)}): "
                             "jax.experimental.rnn runs LSTMs only; use the scan path")
        in_dim = p.wi.shape[0] if i == 0 else hidden
        want = {"wi": (in_dim, 4 * hidden), "wh": (hidden, 4 * hidden), "bi": (4 * hidden,),
                "bh": (4 * hidden,)}
        for name, shape in want.items():
            if tuple(getattr(p, name).shape) != shape:
                raise ValueError(f"cudnn_lstm: layer {i} {name} has shape "
                                 f"{tuple(getattr(p, name).shape)}, expected {shape}")
    return layers[0].wi.shape[0], hidden, len(layers)


def pack(layers: LSTM) -> Float[Array, " n"]:
    """Our layers as ``jax.experimental.rnn``'s flat weight vector (module docstring): every
    layer's W_ih, W_hh ((4H, in), row-major), then every layer's b_ih, b_hh.

    Raises:
        ValueError: a GRU layer or inconsistent shapes.
    """
    input_size, hidden, num_layers = _sizes(layers)
    mats = [w.T.reshape(-1) for p in layers for w in (p.wi, p.wh)]
    flat = jnp.concatenate(mats + [b for p in layers for b in (p.bi, p.bh)])
    assert flat.size == rnn.get_num_params_in_lstm(input_size, hidden, num_layers, False)
    return flat


def unpack(weights: Float[Array, " n"], input_size: int, hidden_size: int, num_layers: int) -> LSTM:
    """The inverse of :func:`pack`, read with JAX's own ``unpack_lstm_weights``."""
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers, False)
    return tuple(LSTMLayer(w_ih[i].T, w_hh[i].T, b_ih[i], b_hh[i]) for i in range(num_layers))


def _through(kernel: Kernel, layers: LSTM, inputs: Float[Array, "t b i"], state: LSTMState | None,
             reverse: bool) -> tuple[Float[Array, "t b h"], LSTMState]:
    """Runs ``kernel`` with :func:`base.run_lstm`'s signature and return (see :data:`Kernel`)."""
    input_size, hidden, num_layers = _sizes(layers)
    t, n = inputs.shape[0], inputs.shape[1]
    x = jnp.swapaxes(inputs, 0, 1)  # batch-major, as rnn.lstm reads it
    if reverse:
        x = x[:, ::-1]
    if state is None:
        h0 = c0 = jnp.zeros((num_layers, n, hidden), inputs.dtype)
    else:
        h0, c0 = jnp.stack(state.h), jnp.stack(state.c)
    seq_lengths = jnp.full((n,), t, jnp.int32)  # every sequence full length (module docstring)
    y, h_n, c_n = kernel(x, h0, c0, pack(layers), seq_lengths, input_size, hidden, num_layers)
    if reverse:
        y = y[:, ::-1]
    return jnp.swapaxes(y, 0, 1), LSTMState(tuple(h_n), tuple(c_n))


def run_lstm(
    layers: LSTM, inputs: Float[Array, "t b i"], state: LSTMState | None = None,
    reverse: bool = False, precision: jax.lax.PrecisionLike = None,
) -> tuple[Float[Array, "t b h"], LSTMState]:
    """:func:`base.run_lstm` through cuDNN (a CUDA GPU only: see :func:`available`).

    Args:
        layers: the stacked LSTM (LSTM layers only).
        inputs: (t, b, i) float32, every sequence full length.
        state: the initial state, or None for zeros.
        reverse: run from the last frame back (outputs stay aligned with their frames).
        precision: cuDNN's matmul precision; None follows ``jax_default_matmul_precision``
            (TF32 allowed unless it says float32 / highest), as XLA's own matmuls on GPU.

    Returns:
        (top layer's outputs (t, b, H), final state), as :func:`base.run_lstm`.
    """

    def kernel(x, h0, c0, w, seq_lengths, input_size, hidden, num_layers):
        return rnn.lstm(x, h0, c0, w, seq_lengths, input_size=input_size, hidden_size=hidden,
                        num_layers=num_layers, dropout=0.0, bidirectional=False,
                        precision=precision)

    return _through(kernel, layers, inputs, state, reverse)


def run_lstm_reference(
    layers: LSTM, inputs: Float[Array, "t b i"], state: LSTMState | None = None,
    reverse: bool = False,
) -> tuple[Float[Array, "t b h"], LSTMState]:
    """:func:`run_lstm` with cuDNN replaced by ``jax.experimental.rnn.lstm_ref`` fed by JAX's
    ``unpack_lstm_weights`` of our packed weights: runs anywhere (tests on CPU)."""

    def kernel(x, h0, c0, w, seq_lengths, input_size, hidden, num_layers):
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(w, input_size, hidden, num_layers, False)
        return rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, seq_lengths, input_size, hidden,
                            num_layers, 0.0, False)

    return _through(kernel, layers, inputs, state, reverse)


def available() -> bool:
    """Whether cuDNN's LSTM can run here: JAX's default backend is a CUDA GPU and the CUDA
    plugin's RNN kernels are linked (ROCm excluded: MIOpen reads another gate order)."""
    if jax.default_backend() != "gpu":
        return False
    if getattr(rnn.gpu_rnn, "_cuda_rnn", None) is None:
        return False
    return "rocm" not in str(getattr(jax.devices()[0].client, "platform_version", "")).lower()


def _precision_ok(precision: jax.lax.PrecisionLike) -> bool:
    """cuDNN's LSTM refuses bfloat16 matmul precision (explicit or jax_default_matmul_precision)."""
    check = getattr(rnn, "_lstm_cudnn_allow_tf32", None)  # the check rnn.lstm makes when traced
    try:
        if check is not None:
            check(precision)
    except (NotImplementedError, ValueError):
        return False
    return True


def choose(impl: str, layers: LSTM, dtype, precision: jax.lax.PrecisionLike = None) -> str:
    """The path ``model.lstm_impl=impl`` takes for these layers: 'scan' or 'cudnn'. 'auto' takes
    cuDNN where it can run (a CUDA GPU, LSTM layers, float32, no bfloat16 precision), else scan.

    Raises:
        ConfigError: an unknown ``impl``, or 'cudnn' where cuDNN cannot run (one line, what to do).
    """
    if impl not in IMPLS:
        raise ConfigError(f"model.lstm_impl={impl!r}: must be one of {IMPLS}")
    if impl == "scan":
        return "scan"
    reasons = []
    if not available():
        reasons.append("needs a CUDA GPU visible to JAX "
                       f"(default backend here: {jax.default_backend()})")
    if any(base.is_gru(p) for p in layers):
        reasons.append("model.rnn_cell=gru has no cuDNN path "
                       "(jax.experimental.rnn runs LSTMs only)")
    if jnp.dtype(dtype) != jnp.float32:
        reasons.append("jax.experimental.rnn runs float32 only "
                       f"(inputs are {jnp.dtype(dtype).name})")
    if any(p.wh.dtype != jnp.float32 for p in layers):
        reasons.append("model.matmul_dtype=bfloat16 has no cuDNN path (float32 weights only)")
    if not _precision_ok(precision):
        reasons.append("jax.experimental.rnn refuses bfloat16 matmul precision")
    if not reasons:
        return "cudnn"
    if impl == "cudnn":
        raise ConfigError(f"model.lstm_impl=cudnn: {reasons[0]}; "
                          "use model.lstm_impl=scan (or auto)")
    return "scan"


def maybe_run_lstm(
    layers: LSTM, inputs: Float[Array, "t b i"], state: LSTMState | None = None,
    reverse: bool = False, impl: str = "scan", unroll: int = 1, lengths: Array | None = None,
) -> tuple[Float[Array, "t b h"], LSTMState]:
    """:func:`base.run_lstm` or :func:`run_lstm`, as :func:`choose` decides for ``impl`` (the
    choice is made when traced: static under jit). Not under ``jax.vmap``: cuDNN's primitive
    has no batching rule, so vmapped callers (populations) must pass impl='scan'. With
    ``lengths`` (padded rows, see base.run_lstm) the scan runs.

    Raises:
        ConfigError: see :func:`choose`.
    """
    if lengths is None and choose(impl, layers, inputs.dtype) == "cudnn":
        return run_lstm(layers, inputs, state, reverse)
    return base.run_lstm(layers, inputs, state, reverse=reverse, unroll=unroll, lengths=lengths)
