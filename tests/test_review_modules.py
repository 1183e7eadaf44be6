"""Each model against the review's own PyTorch module, where a checkout of the review's code is at
hand: ``DVAE_REVIEW_REPO=/path/to/DVAE pytest tests/test_review_modules.py`` (the checkout of
https://github.com/XiaoyuBIE1994/DVAE; PyTorch needed). Nothing of the review's code is copied: its
``dvae/model/<model>.py`` is imported from the checkout and built by its own ``build_<MODEL>`` from
its own ``config/speech/cfg_<model>.ini``.

The review module loads dvae_jax's parameters through ``interop.variables_to_state_dict`` (what
``dvae-jax export-review`` writes) and draws its reparameterisation noise from dvae_jax's noise
(its bound ``reparameterization`` replaced), so both compute the same function of the same values;
compared in float32. Without the checkout these tests are skipped: the float64 loops of
tests/reference_review.py, written from these modules, are the judge in CI.
"""

import configparser
import importlib.util
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from dvae_jax import config, interop, models
from tests import model_checks

REPO = os.environ.get("DVAE_REVIEW_REPO", "")
pytestmark = pytest.mark.skipif(not REPO or not Path(REPO, "dvae", "model").is_dir(),
                                reason="set DVAE_REVIEW_REPO to a checkout of the review's code")

# preset -> (module file, builder, speech config)
MODULES = {
    "vae_review_speech": ("vae", "build_VAE", "cfg_vae"),
    "dkf_review_speech": ("dkf", "build_DKF", "cfg_dkf"),
    "storn_review_speech": ("storn", "build_STORN", "cfg_storn"),
    "rvae_causal_review_speech": ("rvae", "build_RVAE", "cfg_rvae_Causal"),
    "rvae_noncausal_review_speech": ("rvae", "build_RVAE", "cfg_rvae_NonCausal"),
    "dsae_review_speech": ("dsae", "build_DSAE", "cfg_dsae"),
    "vrnn_review_speech": ("vrnn", "build_VRNN", "cfg_vrnn"),
    "srnn_review_speech": ("srnn", "build_SRNN", "cfg_srnn"),
}


def review_module(preset):
    torch = pytest.importorskip("torch")
    name, builder, ini = MODULES[preset]
    spec = importlib.util.spec_from_file_location(f"review_{name}", Path(REPO, "dvae", "model", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read(Path(REPO, "config", "speech", f"{ini}.ini"))
    net = getattr(module, builder)(parser, "cpu")
    return torch, net


def noise_feed(torch, cfg, noise):
    """The review's reparameterization fed dvae_jax's noise, call by call: v first (DSAE), then z
    for all frames at once (VAE, STORN, DSAE, VRNN's loop per frame...) or one frame per call."""
    z = np.swapaxes(np.asarray(noise[..., :cfg.z_dim]), 0, 1)  # (t, b, z)
    v = np.asarray(noise[:, 0, cfg.z_dim:])
    calls = {"frame": 0}

    def reparameterization(mean, logvar):
        if mean.ndim == 3 and mean.shape[0] == len(z):  # every frame at once
            eps = z
        elif mean.ndim == 2 and cfg.model == "dsae" and calls.get("v") is None:
            calls["v"] = True
            eps = v
        else:  # one frame, (b, z) or (1, b, z)
            eps = z[calls["frame"]].reshape(mean.shape)
            calls["frame"] += 1
        return mean + torch.exp(0.5 * logvar) * torch.from_numpy(np.array(eps))

    return reparameterization


@pytest.mark.parametrize("preset", sorted(MODULES))
def test_the_review_module_computes_what_dvae_jax_computes(preset):
    # Given the review's module of the preset, with dvae_jax's parameters and noise
    cfg = config.model_preset(preset)
    torch, net = review_module(preset)
    variables, x, noise = model_checks.make(cfg, 11, b=2, t=7)
    sd = interop.variables_to_state_dict(variables, cfg)
    net.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in sd.items()}, strict=True)
    net.reparameterization = noise_feed(torch, cfg, noise)
    # When both run the same frames
    with torch.no_grad():
        y = net(torch.from_numpy(np.ascontiguousarray(np.swapaxes(np.asarray(x), 0, 1)))).numpy()
    out, _ = jax.jit(lambda v, x, n: models.forward(cfg, v, x, n))(variables, x, noise)
    # Then the decoder output, the posterior and the prior agree to float32 round-off
    tb = lambda a: np.swapaxes(np.asarray(a), 0, 1)
    errs = {"y": model_checks.rel_err(out.x_out, tb(y)),
            "z_mean": model_checks.rel_err(out.mean_q, tb(net.z_mean.numpy())),
            "z_logvar": model_checks.rel_err(out.logvar_q, tb(net.z_logvar.numpy())),
            "z_mean_p": model_checks.rel_err(out.prior_loc, tb(net.z_mean_p.numpy())),
            "z_logvar_p": model_checks.rel_err(out.prior_logvar, tb(net.z_logvar_p.numpy()))}
    if cfg.model == "dsae":
        errs["v_mean"] = model_checks.rel_err(out.seq.mean_q, net.v_mean.numpy())
    print(preset, {k: f"{e:.1e}" for k, e in errs.items()})
    assert max(errs.values()) < 2e-5, errs
