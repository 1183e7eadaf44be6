"""`dvae-jax bench --review-repo PATH` against a small fake checkout of the review's code written
into tmp_path (CI has no copy of the review's code): it is imported from PATH, its builders read the
review's config keys, its step is timed with anomaly detection off and on, and a bad PATH is one
line naming --review-repo."""

import argparse
import json
import textwrap

import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed (pip install 'dvae-jax[torch]')"
)

from dvae_jax import bench, cli, errors, review_code

# The API the bench needs from the review's code: build_VRNN / build_SRNN(cfg, device) reading the
# [Network] keys of cfg_vrnn.ini / cfg_srnn.ini, a forward(x) returning the log-power and leaving
# z_mean, z_logvar, z_mean_p, z_logvar_p on the module; loss_ISD and loss_KLD.
FAKE_MODEL = """
import torch
from torch import nn

SEEN = []  # (model, anomaly detection enabled during forward) per call


class Fake(nn.Module):
    def __init__(self, name, x_dim, z_dim, hidden, device):
        super().__init__()
        self.name, self.device = name, device
        self.enc = nn.Linear(x_dim, 2 * z_dim)
        self.prior = nn.Linear(x_dim, 2 * z_dim)
        self.dec = nn.Linear(z_dim, x_dim)
        self.hidden = hidden

    def forward(self, x):
        SEEN.append((self.name, torch.is_anomaly_enabled()))
        self.z_mean, self.z_logvar = self.enc(x).chunk(2, -1)
        self.z_mean_p, self.z_logvar_p = self.prior(torch.roll(x, 1, 0)).chunk(2, -1)
        z = self.z_mean + torch.randn_like(self.z_mean) * torch.exp(0.5 * self.z_logvar)
        return self.dec(z)


def build_{NAME}(cfg, device="cpu"):
    assert cfg.get("Network", "name") == "{NAME}"
    for key in {KEYS}:
        cfg.get("Network", key)  # the review's keys, case kept (dim_RNN)
    assert cfg.getfloat("Training", "beta") == 1.0
    return Fake("{NAME}", cfg.getint("Network", "x_dim"), cfg.getint("Network", "z_dim"),
                cfg.getint("Network", "{HIDDEN}"), device).to(device)
"""
VRNN_KEYS = [
    "activation",
    "dropout_p",
    "dense_x",
    "dense_z",
    "dense_hx_z",
    "dense_hz_x",
    "dense_h_z",
    "dim_RNN",
    "num_RNN",
]
SRNN_KEYS = [
    "activation",
    "dropout_p",
    "dense_x_h",
    "dim_RNN_h",
    "num_RNN_h",
    "dense_hx_g",
    "dim_RNN_g",
    "num_RNN_g",
    "dense_gz_z",
    "dense_hz_z",
    "dense_hz_x",
]
FAKE_LOSS = """
import torch


def loss_ISD(x, y):
    y = y + 1e-10
    return torch.sum(x / y - torch.log(x / y) - 1)


def loss_KLD(z_mean, z_logvar, z_mean_p=0, z_logvar_p=0):
    return -0.5 * torch.sum(z_logvar - z_logvar_p
                            - torch.div(z_logvar.exp() + (z_mean - z_mean_p).pow(2), z_logvar_p.exp()))
"""


def fake_checkout(root):
    (root / "dvae" / "model").mkdir(parents=True)
    (root / "dvae" / "utils").mkdir(parents=True)
    # The package __init__ needs the metrics' dependencies: the bench must not import it.
    (root / "dvae" / "utils" / "__init__.py").write_text("import pypesq_not_installed\n")
    for name, keys, hidden in (("VRNN", VRNN_KEYS, "dim_RNN"), ("SRNN", SRNN_KEYS, "dim_RNN_h")):
        src = (
            FAKE_MODEL.replace("{NAME}", name)
            .replace("{KEYS}", repr(keys))
            .replace("{HIDDEN}", hidden)
        )
        (root / "dvae" / "model" / f"{name.lower()}.py").write_text(textwrap.dedent(src))
    (root / "dvae" / "utils" / "loss.py").write_text(FAKE_LOSS)
    return root


def _args(*extra):
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", "--tiny", "--steps", "2", "--warmup", "1", *extra])


def test_review_repo_times_the_review_code_with_anomaly_off_and_on(tmp_path, capsys):
    # Given a checkout of (a stand-in for) the review's code
    repo = fake_checkout(tmp_path / "DVAE")
    out = tmp_path / "bench.json"
    args = _args(
        "--models",
        "vrnn,srnn",
        "--settings",
        "review,mel",
        "--review-repo",
        str(repo),
        "--json",
        str(out),
    )
    # When bench runs with --review-repo
    assert args.func(args) == 0
    # Then each Itakura-Saito row has the review's times, off and on, and the ratios
    rows = {(r["setting"], r["model"]): r for r in json.loads(out.read_text())["rows"]}
    for model in ("vrnn", "srnn"):
        row = rows["review", model]
        assert row["review_ms"] > 0 and row["review_anomaly_ms"] > 0
        assert row["review_speedup"] == pytest.approx(row["review_ms"] / row["jax_ms"])
        assert row["review_anomaly_speedup"] == pytest.approx(
            row["review_anomaly_ms"] / row["jax_ms"]
        )
        assert row["torch_over_review"] == pytest.approx(row["torch_ms"] / row["review_ms"])
        assert row["review_cpu_ms"] > 0
    # And the Gaussian (mel) rows say why the review's code was not timed
    assert "review_ms" not in rows["mel", "vrnn"]
    assert "Itakura-Saito" in rows["mel", "vrnn"]["review_skipped"]
    table = capsys.readouterr().out
    assert "| review ms | x review | review+anomaly ms |" in table


def test_anomaly_detection_is_on_only_in_the_anomaly_step(tmp_path):
    # Given the review's VRNN built through its own builder from the fake checkout
    code = review_code.load(fake_checkout(tmp_path / "DVAE"))
    cfg = bench.model_config("vrnn", "review", tiny=True)
    x = bench._torch_x(cfg, 4, 6)
    seen = code.build["vrnn"].__globals__["SEEN"]

    def loss(module, xx):
        return review_code.train_loss(code, module, xx)

    # When a step runs with anomaly detection off, then one with it on
    bench.TorchStep(review_code.build(code, cfg), loss, x, anomaly=False)()
    off = list(seen)
    seen.clear()
    bench.TorchStep(review_code.build(code, cfg), loss, x, anomaly=True)()
    # Then the forward saw it off, then on, and it is off again afterwards
    assert off and not any(flag for _, flag in off)
    assert seen and all(flag for _, flag in seen)
    assert not torch.is_anomaly_enabled()


@pytest.mark.parametrize(
    "damage,expect",
    [
        ("missing", "no such directory"),
        (
            "empty",
            "not the review's code (dvae/model/vrnn.py, dvae/model/srnn.py, dvae/utils/loss.py missing)",
        ),
        ("import", "importing dvae/model/srnn.py failed (ModuleNotFoundError"),
        ("api", "not the review's code (dvae/utils/loss.py has no loss_KLD)"),
    ],
)
def test_a_bad_review_repo_is_one_line_naming_the_option(tmp_path, capsys, damage, expect):
    # Given a path that is not a usable checkout of the review's code
    repo = tmp_path / "DVAE"
    if damage == "empty":
        repo.mkdir()
    elif damage in ("import", "api"):
        fake_checkout(repo)
        if damage == "import":
            (repo / "dvae" / "model" / "srnn.py").write_text("import a_module_nobody_has\n")
        else:
            (repo / "dvae" / "utils" / "loss.py").write_text("def loss_ISD(x, y):\n    return x\n")
    # When it is loaded directly, or through the CLI
    with pytest.raises(errors.ConfigError) as e:
        review_code.load(repo)
    status = cli.main(["--no-cache", "bench", "--tiny", "--review-repo", str(repo)])
    # Then the error is one line naming --review-repo, the path, what is wrong and what to do
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--review-repo {repo}: ") and expect in msg
    assert "clone of https://github.com/XiaoyuBIE1994/DVAE" in msg
    err = capsys.readouterr().err
    assert (
        status == 2 and err.count("\n") == 1 and "--review-repo" in err and "Traceback" not in err
    )


def test_review_config_has_the_review_keys_and_values():
    # Given the review's VRNN and SRNN settings
    for model, keys in (("vrnn", VRNN_KEYS), ("srnn", SRNN_KEYS)):
        cfg = bench.model_config(model, "review")
        # When they are written as the review's config
        parser = review_code.review_config(cfg)
        # Then every key its builder reads is there, with the preset's values
        assert set(keys) | {"name", "x_dim", "z_dim"} == set(parser["Network"])
        assert parser.getint("Network", "x_dim") == 513 and parser.getint("Network", "z_dim") == 16
    vrnn = review_code.review_config(bench.model_config("vrnn", "review"))
    assert (vrnn.get("Network", "dense_z"), vrnn.get("Network", "dense_hx_z")) == ("32,64", "")
    srnn = review_code.review_config(bench.model_config("srnn", "review"))
    assert (
        srnn.get("Network", "dense_gz_z") == "64,32" and srnn.getint("Network", "dim_RNN_g") == 128
    )


def test_a_checkout_whose_builder_fails_is_one_line(tmp_path, capsys):
    # Given a checkout whose build_VRNN raises (an incompatible version of the review's code)
    repo = fake_checkout(tmp_path / "DVAE")
    vrnn = repo / "dvae" / "model" / "vrnn.py"
    vrnn.write_text(vrnn.read_text() + "\n\ndef build_VRNN(cfg, device='cpu'):\n    raise KeyError('dim_RNN')\n")
    # When bench runs it through the command
    code = cli.main(["bench", "--tiny", "--models", "vrnn", "--settings", "review", "--steps", "1",
                     "--warmup", "0", "--no-torch", "--review-repo", str(repo)])
    # Then one line names the option, the checkout and what failed; exit status 2
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("dvae-jax bench: error: --review-repo") and "vrnn step failed (KeyError" in err[0]
