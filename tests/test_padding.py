"""Whole utterances of different lengths in one padded batch (evaluation): with ``lengths`` every
model's real frames are computed as if each row ran alone, also where a recurrence runs backward
in time (SRNN's g, DKF's and RVAE's inference, DSAE's summaries, RVAE's non-causal decoder)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config
from dvae_jax.models import base
from tests import model_checks

TINY = {
    "vrnn": config.ModelConfig(model="vrnn", x_dim=7, z_dim=3, dense_x=(6,), dense_z=(4,), dim_rnn=8),
    "srnn": config.ModelConfig(model="srnn", x_dim=7, z_dim=3, dense_x_h=(6,), dense_hx_g=(5,),
                               dense_gz_z=(4,), dense_hz_z=(5,), dim_rnn=8, dim_rnn_g=6, num_rnn=2),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_padded_rows_equal_rows_run_alone(name):
    model_checks.assert_padding_is_invisible(TINY[name])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("reverse", [False, True])
def test_run_lstm_with_lengths_equals_each_row_alone(cell, reverse):
    # Given a 2-layer recurrence and rows of 5, 2 and 4 real frames padded with noise to 5
    decl = base.Declare((("r", ("lstm", 3, 4, 2, cell)),))
    layers = base.read_lstm(decl.init(jax.random.PRNGKey(0))["params"]["r"])
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3, 3))
    lengths = jnp.asarray([5, 2, 4])
    # When it runs with lengths, and on each row's real frames alone
    out, state = base.run_lstm(layers, x, reverse=reverse, lengths=lengths)
    for row, n in enumerate([5, 2, 4]):
        want, want_state = base.run_lstm(layers, x[:n, row:row + 1], reverse=reverse)
        # Then the real frames' outputs and each layer's final h are the row's own
        np.testing.assert_allclose(out[:n, row], want[:, 0], rtol=1e-5, atol=1e-6)
        for k in range(2):
            np.testing.assert_allclose(state.h[k][row], want_state.h[k][0], rtol=1e-5, atol=1e-6)
