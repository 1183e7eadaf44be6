"""dvae_jax.interop without PyTorch where possible: name mapping, clear errors, checkpoint files,
and the import-review / export-review commands."""

import argparse

import jax
import numpy as np
import pytest

from dvae_jax import config, interop, models

VRNN = config.model_preset("vrnn_review_speech")
SRNN = config.model_preset("srnn_review_speech")


def _state_dict(cfg, seed=0):
    """A review-layout state_dict of random numpy arrays, built from dvae_jax's own shapes."""
    variables = models.init(cfg, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    noisy = jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape).astype(np.float32), variables)
    return interop.variables_to_state_dict(noisy, cfg)


@pytest.mark.parametrize("cfg", [VRNN, SRNN], ids=["vrnn", "srnn"])
def test_review_names_and_shapes(cfg):
    sd = _state_dict(cfg)
    # The review's module names (MODELS.md) with torch shapes
    if cfg.model == "vrnn":
        assert sd["feature_extractor_x.linear0.weight"].shape == (256, 513)
        assert sd["inf_mean.weight"].shape == (16, 256 + 128)
        assert sd["gen_out.weight"].shape == (513, 64 + 128)
        assert sd["rnn.weight_ih_l0"].shape == (512, 320)
    else:
        assert sd["mlp_hx_g.linear0.weight"].shape == (256, 128 + 513)
        assert sd["rnn_g.weight_hh_l0"].shape == (512, 128)
        assert sd["prior_logvar.weight"].shape == (16, 32)
        assert sd["mlp_hz_x.linear0.weight"].shape == (256, 144)
    assert sum(a.size for a in sd.values()) == (480_097 if cfg.model == "vrnn" else 884_993)


def test_heads_are_fused_mean_then_logvar():
    sd = _state_dict(VRNN)
    kernel = interop.state_dict_to_variables(sd, VRNN)["params"]["posterior"]["linear0"]["kernel"]
    np.testing.assert_array_equal(kernel[:, :16], sd["inf_mean.weight"].T)
    np.testing.assert_array_equal(kernel[:, 16:], sd["inf_logvar.weight"].T)


def test_errors_name_missing_unexpected_and_misshaped_keys():
    sd = _state_dict(VRNN)
    del sd["inf_mean.bias"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["gen_out.weight"] = np.zeros((7, 7), np.float32)
    with pytest.raises(interop.InteropError) as err:
        interop.state_dict_to_variables(sd, VRNN)
    msg = str(err.value)
    assert "inf_mean.bias" in msg and "extra.weight" in msg and "gen_out.weight" in msg
    # A checkpoint of the other model is refused, not silently mis-read
    with pytest.raises(interop.InteropError, match="missing keys"):
        interop.state_dict_to_variables(_state_dict(SRNN), VRNN)


def test_module_prefix_and_wrapped_state_dicts():
    sd = _state_dict(VRNN)
    wrapped = {"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in sd.items()}}
    got = interop.state_dict_to_variables(interop.extract_state_dict(wrapped), VRNN)
    back = interop.variables_to_state_dict(got, VRNN)
    assert all(np.array_equal(back[k], sd[k]) for k in sd)
    with pytest.raises(interop.InteropError, match="no state_dict"):
        interop.extract_state_dict({"epoch": 3, "optimizer": "adam"})


def test_import_then_export_commands_round_trip(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    sd = _state_dict(SRNN, seed=4)
    ckpt = tmp_path / "review.pt"
    torch.save({"model_state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}, "epoch": 9}, ckpt)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    interop.register(sub)
    run_dir = tmp_path / "run"
    args = parser.parse_args(["import-review", str(ckpt), "--preset", "srnn_review_speech", "--out", str(run_dir)])
    assert args.func(args) == 0
    out = tmp_path / "back.pt"
    args = parser.parse_args(["export-review", "--workdir", str(run_dir), "--out", str(out)])
    assert args.func(args) == 0
    back = interop.load_review_checkpoint(out)
    assert set(back) == set(sd)
    assert all(np.array_equal(back[k], sd[k]) for k in sd)


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    with pytest.raises(interop.InteropError, match="no such checkpoint"):
        interop.load_review_checkpoint(tmp_path / "nope.pt")
