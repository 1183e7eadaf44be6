"""The cuDNN LSTM path (dvae_jax/models/cudnn_lstm.py) against the scan path, on CPU.

``jax.experimental.rnn.lstm`` does not trace on CPU, so the layout is checked through JAX's own
reference, ``lstm_ref`` fed by ``unpack_lstm_weights`` of our packed weights (JAX's GPU tests
check cuDNN against that reference); the wrapping (batch-major, time flip, states, seq_lengths)
is checked by a stand-in for ``rnn.lstm`` that asserts its arguments. The last test runs the
real cuDNN kernel and is skipped without a CUDA GPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

from dvae_jax import config, models
from dvae_jax.errors import ConfigError
from dvae_jax.models import base, cudnn_lstm
from dvae_jax.models.base import LSTMLayer, LSTMState

T, B, I, H = 5, 3, 4, 6
# float32 scan vs lstm_ref: both run the same products in another association order (lstm_ref adds
# x W_i and h W_h gate by gate, both biases apart); measured max |diff| over the cases below:
# 1.8e-7 (outputs, states), 9.5e-7 (gradients); a whole SRNN pass 6e-8, its gradients 2.4e-7
# (largest 18).
ATOL = 2e-6


def layers_of(key, num_layers, in_dim=I, hidden=H, gates=4):
    out = []
    for i in range(num_layers):
        k = jax.random.split(jax.random.fold_in(key, i), 4)
        d = in_dim if i == 0 else hidden
        u = lambda kk, s: jax.random.uniform(kk, s, jnp.float32, -0.6, 0.6)
        out.append(LSTMLayer(u(k[0], (d, gates * hidden)), u(k[1], (hidden, gates * hidden)),
                             u(k[2], (gates * hidden,)), u(k[3], (gates * hidden,))))
    return tuple(out)


def state_of(key, num_layers, zero):
    if zero:
        return None
    k1, k2 = jax.random.split(key)
    draw = lambda k: tuple(jax.random.normal(jax.random.fold_in(k, i), (B, H))
                           for i in range(num_layers))
    return LSTMState(draw(k1), draw(k2))


def assert_tree_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.shape == y.shape and np.array_equal(np.asarray(x), np.asarray(y))


def max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


@pytest.mark.parametrize("num_layers", [1, 2])
def test_pack_unpack_round_trip_is_bit_exact(num_layers):
    # given our layers and a flat vector drawn by JAX's own initialiser
    layers = layers_of(jax.random.key(0), num_layers)
    flat = rnn.init_lstm_weight(jax.random.key(1), I, H, num_layers, False)
    # when packed and unpacked (unpack reads with JAX's unpack_lstm_weights), both ways
    # then nothing moves, and the packed size is JAX's count
    assert cudnn_lstm.pack(layers).shape == (rnn.get_num_params_in_lstm(I, H, num_layers, False),)
    assert_tree_equal(cudnn_lstm.unpack(cudnn_lstm.pack(layers), I, H, num_layers), layers)
    assert_tree_equal(cudnn_lstm.pack(cudnn_lstm.unpack(flat, I, H, num_layers)), flat)


def test_pack_layout_by_hand():
    # given two layers whose every entry is distinct
    layers = layers_of(jax.random.key(2), 2)
    flat = np.asarray(cudnn_lstm.pack(layers))
    # then: W_ih^0 (4H, I), W_hh^0, W_ih^1 (4H, H), W_hh^1 row-major, then b_ih^0, b_hh^0, b_ih^1,
    # b_hh^1 (JAX's module docstring), gates i, f, g, o in both
    parts = [layers[0].wi.T, layers[0].wh.T, layers[1].wi.T, layers[1].wh.T,
             layers[0].bi, layers[0].bh, layers[1].bi, layers[1].bh]
    at = 0
    for part in parts:
        part = np.asarray(part).reshape(-1)
        np.testing.assert_array_equal(flat[at:at + part.size], part)
        at += part.size
    assert at == flat.size
    # ... so W_if (the forget gate's input weights, rows H..2H) is our wi[:, H:2H] transposed
    w_if = flat[:4 * H * I].reshape(4 * H, I)[H:2 * H]
    np.testing.assert_array_equal(w_if, np.asarray(layers[0].wi[:, H:2 * H]).T)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("zero_state", [True, False])
def test_reference_matches_scan(num_layers, reverse, zero_state):
    # given random layers, inputs and (non-zero) initial state
    layers = layers_of(jax.random.key(3), num_layers)
    x = jax.random.normal(jax.random.key(4), (T, B, I))
    state = state_of(jax.random.key(5), num_layers, zero_state)
    # when run by JAX's reference LSTM on our packed weights and by the scan path
    got = cudnn_lstm.run_lstm_reference(layers, x, state, reverse)
    want = base.run_lstm(layers, x, state, reverse=reverse)
    # then outputs (t, b, H) and final states agree to float32 rounding
    assert got[0].shape == (T, B, H) and len(got[1].h) == num_layers
    assert max_diff(got, want) < ATOL


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_gradients_match_scan(num_layers, reverse):
    # given a loss reading every output and the final state
    layers = layers_of(jax.random.key(6), num_layers)
    x = jax.random.normal(jax.random.key(7), (T, B, I))
    state = state_of(jax.random.key(8), num_layers, False)
    r = jax.random.normal(jax.random.key(9), (T, B, H))

    def loss(run, layers, x, state):
        y, s = run(layers, x, state)
        return jnp.sum(r * y) + sum(jnp.sum(h * (i + 1.0)) + jnp.sum(jnp.sin(c)) for i, (h, c) in
                                    enumerate(zip(s.h, s.c)))

    scan = lambda ls, x, s: base.run_lstm(ls, x, s, reverse=reverse)
    ref = lambda ls, x, s: cudnn_lstm.run_lstm_reference(ls, x, s, reverse)
    # when differentiated wrt weights, inputs and initial state on both paths
    g_scan = jax.grad(loss, argnums=(1, 2, 3))(scan, layers, x, state)
    g_ref = jax.grad(loss, argnums=(1, 2, 3))(ref, layers, x, state)
    # ... and wrt the flat vector cuDNN differentiates, mapped back to our layers by unpack
    flat = cudnn_lstm.pack(layers)
    g_flat = jax.grad(lambda w: loss(ref, cudnn_lstm.unpack(w, I, H, num_layers), x, state))(flat)
    # then all agree to float32 rounding
    assert max_diff(g_ref, g_scan) < ATOL
    assert max_diff(cudnn_lstm.unpack(g_flat, I, H, num_layers), g_scan[0]) < ATOL


def fake_cudnn(calls):
    """A stand-in for rnn.lstm that checks the call contract, then runs JAX's reference."""

    def lstm(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size, num_layers, dropout,
             bidirectional, precision=None):
        n, t = x.shape[:2]
        assert x.shape == (n, t, input_size)
        assert h_0.shape == c_0.shape == (num_layers, n, hidden_size)
        assert seq_lengths.dtype == jnp.int32 and seq_lengths.shape == (n,)
        if not isinstance(seq_lengths, jax.core.Tracer):  # (under jit its value is unknown)
            assert np.all(np.asarray(seq_lengths) == t)  # full length: the time flip is exact
        assert dropout == 0.0 and bidirectional is False and x.dtype == jnp.float32
        size = rnn.get_num_params_in_lstm(input_size, hidden_size, num_layers, False)
        assert weights.shape == (size,)
        calls.append(precision)
        w = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, False)
        return rnn.lstm_ref(x, h_0, c_0, *w, seq_lengths, input_size, hidden_size, num_layers,
                            0.0, False)

    return lstm


@pytest.mark.parametrize("reverse", [False, True])
def test_run_lstm_calls_rnn_lstm_with_its_contract(monkeypatch, reverse):
    # given rnn.lstm replaced by a stand-in that checks its arguments
    calls = []
    monkeypatch.setattr(cudnn_lstm.rnn, "lstm", fake_cudnn(calls))
    layers = layers_of(jax.random.key(10), 2)
    x = jax.random.normal(jax.random.key(11), (T, B, I))
    state = state_of(jax.random.key(12), 2, False)
    # when run through run_lstm (the cuDNN entry point)
    got = cudnn_lstm.run_lstm(layers, x, state, reverse)
    # then it called rnn.lstm once and matches the scan path
    assert calls == [None]
    assert max_diff(got, base.run_lstm(layers, x, state, reverse=reverse)) < ATOL


def test_gru_is_refused():
    # given GRU layers (wh (H, 3H))
    gru = layers_of(jax.random.key(13), 1, gates=3)
    # then packing refuses them, and so does lstm_impl=cudnn; auto runs them by scan
    with pytest.raises(ValueError, match="GRU"):
        cudnn_lstm.pack(gru)
    with pytest.raises(ConfigError, match="lstm_impl=cudnn"):
        cudnn_lstm.choose("cudnn", gru, jnp.float32)
    assert cudnn_lstm.choose("auto", gru, jnp.float32) == "scan"


def test_bad_shapes_are_refused():
    layers = layers_of(jax.random.key(14), 2)
    bad = (layers[0], layers[1]._replace(bh=layers[1].bh[:-1]))
    with pytest.raises(ValueError, match="layer 1 bh"):
        cudnn_lstm.pack(bad)
    with pytest.raises(ValueError, match="no layer"):
        cudnn_lstm.pack(())


def test_on_cpu_cudnn_is_refused_and_auto_is_the_scan():
    # given this CPU backend
    layers = layers_of(jax.random.key(15), 2)
    x = jax.random.normal(jax.random.key(16), (T, B, I))
    # then cuDNN is not available, lstm_impl=cudnn is a one-line ConfigError, auto is the scan
    assert not cudnn_lstm.available()
    one_line = r"^model.lstm_impl=cudnn: needs a CUDA GPU visible to JAX .*use model.lstm_impl=scan"
    with pytest.raises(ConfigError, match=one_line):
        cudnn_lstm.maybe_run_lstm(layers, x, impl="cudnn")
    with pytest.raises(ConfigError, match="must be one of"):
        cudnn_lstm.maybe_run_lstm(layers, x, impl="cuda")
    for impl in ("auto", "scan"):
        assert_tree_equal(cudnn_lstm.maybe_run_lstm(layers, x, None, True, impl=impl),
                          base.run_lstm(layers, x, None, reverse=True))


def test_auto_on_a_cuda_gpu_picks_cudnn_where_it_can_run(monkeypatch):
    # given a backend that reports a CUDA GPU, and rnn.lstm replaced by the stand-in
    monkeypatch.setattr(cudnn_lstm, "available", lambda: True)
    calls = []
    monkeypatch.setattr(cudnn_lstm.rnn, "lstm", fake_cudnn(calls))
    layers = layers_of(jax.random.key(17), 1)
    x = jax.random.normal(jax.random.key(18), (T, B, I))
    # then auto and cudnn take cuDNN for float32 LSTM layers (inside jit too) ...
    assert cudnn_lstm.choose("auto", layers, jnp.float32) == "cudnn"
    run = jax.jit(lambda ls, x: cudnn_lstm.maybe_run_lstm(ls, x, None, True, impl="auto"))
    got = run(layers, x)
    assert len(calls) == 1 and max_diff(got, base.run_lstm(layers, x, reverse=True)) < ATOL
    # ... and scan (auto) or a ConfigError (cudnn) for float64 inputs or bfloat16 precision
    assert cudnn_lstm.choose("auto", layers, jnp.float64) == "scan"
    with pytest.raises(ConfigError, match="float32 only"):
        cudnn_lstm.choose("cudnn", layers, jnp.float64)
    with jax.default_matmul_precision("bfloat16"):
        assert cudnn_lstm.choose("auto", layers, jnp.float32) == "scan"
        with pytest.raises(ConfigError, match="bfloat16"):
            cudnn_lstm.choose("cudnn", layers, jnp.float32)
    with jax.default_matmul_precision("float32"):
        assert cudnn_lstm.choose("cudnn", layers, jnp.float32) == "cudnn"


@pytest.mark.slow  # a whole SRNN pass and its gradients, twice, op by op: 15-35 s on this CPU
def test_srnn_forward_with_the_reference_in_place_of_the_scan(monkeypatch):
    # given a 2-layer SRNN (LSTM_h from a non-zero carry, LSTM_g backwards) and a warm carry
    cfg = config.ModelConfig(model="srnn", x_dim=5, z_dim=2, dense_x_h=(4,), dense_hx_g=(4,),
                             dense_gz_z=(4,), dense_hz_z=(4,), dense_hz_x=(4,), dim_rnn=6,
                             dim_rnn_g=5, num_rnn=2)
    variables = models.init(cfg, jax.random.key(19))
    x = jax.random.normal(jax.random.key(20), (B, T, cfg.x_dim))
    eps = jax.random.normal(jax.random.key(21), (B, T, cfg.z_dim))
    _, carry = models.forward(cfg, variables, x[:, :1], eps[:, :1])

    def loss(v):
        out, c = models.forward(cfg, v, x, eps, carry=carry)
        return jnp.sum(out.x_out) + jnp.sum(out.mean_q) + sum(jnp.sum(h) for h in c.state.h), out

    (want_l, want), want_g = jax.value_and_grad(loss, has_aux=True)(variables)
    # when the data-driven LSTMs run through JAX's reference LSTM on the packed weights
    calls = []

    def through_reference(layers, inputs, state=None, reverse=False, unroll=1, lengths=None):
        assert lengths is None  # a training pass: no padded rows
        calls.append(reverse)
        return cudnn_lstm.run_lstm_reference(layers, inputs, state, reverse)

    monkeypatch.setattr(base, "run_lstm", through_reference)
    (got_l, got), got_g = jax.value_and_grad(loss, has_aux=True)(variables)
    # then both LSTMs went through it and the pass and its gradients are the scan's
    assert sorted(calls) == [False, True]
    assert max_diff(got, want) < ATOL and abs(float(got_l - want_l)) < 1e-5
    assert max_diff(got_g, want_g) < 1e-5


@pytest.mark.skipif(not cudnn_lstm.available(), reason="needs a CUDA GPU visible to JAX")
@pytest.mark.parametrize("reverse", [False, True])
def test_cudnn_on_gpu_matches_scan(reverse):
    # given a CUDA GPU: the real cuDNN kernel at float32 matmul precision (no TF32)
    layers = layers_of(jax.random.key(22), 2)
    x = jax.random.normal(jax.random.key(23), (T, B, I))
    state = state_of(jax.random.key(24), 2, False)
    with jax.default_matmul_precision("float32"):
        got = jax.jit(lambda ls, x, s: cudnn_lstm.run_lstm(ls, x, s, reverse))(layers, x, state)
        want = base.run_lstm(layers, x, state, reverse=reverse)
        loss = lambda run: lambda ls: jnp.sum(jnp.sin(run(ls)[0]))
        g = jax.grad(loss(lambda ls: cudnn_lstm.run_lstm(ls, x, state, reverse)))(layers)
        g_scan = jax.grad(loss(lambda ls: base.run_lstm(ls, x, state, reverse=reverse)))(layers)
    assert max_diff(got, want) < 1e-5
    assert max_diff(g, g_scan) < 1e-4
