"""dvae_jax against the PyTorch eager reference in the review's layout (dvae_jax/reference_torch.py):
the same weights (a randomly initialised torch module imported through dvae_jax.interop) and the
same noise give the same loss and the same gradients, and the name mapping round-trips exactly."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'dvae-jax[torch]')")

from dvae_jax import config, interop, losses, models
from dvae_jax import reference_torch as ref

SMALL_VRNN = config.ModelConfig(
    model="vrnn", x_dim=9, z_dim=3, dense_x=(8,), dense_z=(4, 5), dense_hx_z=(6,), dense_hz_x=(7,),
    dense_h_z=(5,), dim_rnn=6, num_rnn=1,
)
SMALL_SRNN = config.ModelConfig(
    model="srnn", x_dim=9, z_dim=3, dense_x_h=(8,), dense_hx_g=(7,), dense_gz_z=(6, 4),
    dense_hz_z=(5,), dense_hz_x=(6,), dim_rnn=6, dim_rnn_g=5, num_rnn=1,
)
CASES = [
    pytest.param(SMALL_VRNN, 3, 5, id="vrnn-small-is"),
    pytest.param(dataclasses.replace(SMALL_VRNN, likelihood="gaussian", num_rnn=2), 3, 5, id="vrnn-small-gauss-2layers"),
    pytest.param(dataclasses.replace(SMALL_VRNN, dense_hx_z=(), dense_hz_x=(), dense_h_z=()), 3, 5, id="vrnn-small-identity-mlps"),
    pytest.param(SMALL_SRNN, 3, 5, id="srnn-small-is"),
    pytest.param(dataclasses.replace(SMALL_SRNN, likelihood="gaussian", learn_x_var=False, fixed_x_logvar=-0.5), 3, 5, id="srnn-small-gauss-fixed"),
    pytest.param(dataclasses.replace(SMALL_SRNN, resq=True), 3, 5, id="srnn-small-resq"),
    pytest.param(dataclasses.replace(SMALL_SRNN, resq=True, share_x_embedding=True, dense_hx_g=()), 3, 5,
                 id="srnn-small-shared-x"),
    pytest.param(dataclasses.replace(SMALL_SRNN, resq=True, rnn_cell="gru", num_rnn=2), 3, 5, id="srnn-small-gru"),
    pytest.param(dataclasses.replace(SMALL_VRNN, rnn_cell="gru", num_rnn=2), 3, 5, id="vrnn-small-gru"),
    pytest.param(config.model_preset("vrnn_review_speech"), 4, 6, id="vrnn-review"),
    pytest.param(config.model_preset("srnn_review_speech"), 4, 6, id="srnn-review"),
]


def _inputs(cfg, b, t, seed):
    rng = np.random.default_rng(seed)
    if cfg.likelihood == "itakura_saito":
        x = rng.gamma(1.0, 1.0, size=(b, t, cfg.x_dim)).astype(np.float32) + 1e-3  # power spectra
    else:
        x = rng.normal(size=(b, t, cfg.x_dim)).astype(np.float32)
    eps = rng.normal(size=(b, t, cfg.z_dim)).astype(np.float32)
    return x, eps


def _torch_loss_and_grads(cfg, module, x, eps, kl_weight):
    module.zero_grad()
    xt = torch.from_numpy(np.swapaxes(x, 0, 1).copy())
    et = torch.from_numpy(np.swapaxes(eps, 0, 1).copy())
    out = module(xt, et)
    loss, recon, kl = module.loss(xt, out, kl_weight=kl_weight)
    loss.backward()
    grads = {k: p.grad.detach().numpy().copy() for k, p in module.named_parameters()}
    return loss.item(), recon.item(), kl.item(), grads


def _jax_loss_and_grads(cfg, variables, x, eps, kl_weight):
    def loss_fn(v):
        out, _ = models.forward(cfg, v, x, eps)
        return losses.elbo(cfg, out, x, kl_weight=kl_weight)

    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables)
    return float(loss), float(metrics["recon"]), float(metrics["kl"]), grads


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("cfg,b,t", CASES)
def test_same_weights_same_noise_same_loss_and_gradients(cfg, b, t):
    # Given a randomly initialised torch module, imported into dvae_jax
    torch.manual_seed(0)
    module = ref.build(cfg)
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    variables = jax.tree_util.tree_map(jnp.asarray, interop.state_dict_to_variables(sd, cfg))
    x, eps = _inputs(cfg, b, t, seed=1)
    # When both compute the loss and its gradients on the same inputs and noise
    t_loss, t_recon, t_kl, t_grads = _torch_loss_and_grads(cfg, module, x, eps, kl_weight=0.6)
    j_loss, j_recon, j_kl, j_grads = _jax_loss_and_grads(cfg, variables, x, eps, kl_weight=0.6)
    # Then the losses agree to float32 round-off
    assert _rel(j_loss, t_loss) < 1e-5, (j_loss, t_loss)
    assert _rel(j_recon, t_recon) < 1e-5
    assert _rel(j_kl, t_kl) < 1e-4, (j_kl, t_kl)
    # And so do the gradients of every parameter, mapped back to the review's names
    j_sd = interop.variables_to_state_dict(j_grads, cfg)
    assert set(j_sd) == set(t_grads)
    errs = {k: _rel(j_sd[k], t_grads[k]) for k in t_grads}
    worst = max(errs, key=errs.get)
    assert errs[worst] < 1e-4, (worst, errs[worst])


@pytest.mark.parametrize("cfg,b,t", CASES)
def test_round_trip_is_exact(cfg, b, t):
    # Given a torch state_dict
    torch.manual_seed(3)
    sd = {k: v.detach().numpy() for k, v in ref.build(cfg).state_dict().items()}
    # When it goes to flax variables and back
    back = interop.variables_to_state_dict(interop.state_dict_to_variables(sd, cfg), cfg)
    # Then every tensor comes back bit for bit, and the flax tree is the model's own
    assert set(back) == set(sd)
    for k, want in sd.items():
        assert back[k].shape == want.shape and np.array_equal(back[k], want), k
    template = jax.eval_shape(lambda k: models.init(cfg, k), jax.random.PRNGKey(0))
    got = interop.state_dict_to_variables(sd, cfg)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(template)
    assert all(
        a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(template))
    )


def test_review_presets_have_the_published_parameter_counts():
    counts = {}
    for name in ("vrnn_review_speech", "srnn_review_speech"):
        module = ref.build(config.model_preset(name))
        counts[name] = sum(p.numel() for p in module.parameters())
    assert counts == {"vrnn_review_speech": 480_097, "srnn_review_speech": 884_993}
