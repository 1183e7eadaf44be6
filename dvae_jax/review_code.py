"""A user's own checkout of the review's code (XiaoyuBIE1994/DVAE), for ``bench --review-repo``.

Nothing of the review's code is copied into this project: its model builders (``build_VRNN``,
``build_SRNN`` in ``dvae/model/``) and its loss functions (``loss_ISD``, ``loss_KLD`` in
``dvae/utils/loss.py``) are imported from the checkout at run time. The three files are loaded
by path rather than through the ``dvae`` package because ``dvae/utils/__init__.py`` imports the
evaluation metrics' dependencies (pypesq, pystoi, soundfile), which timing a train step does not
need. A model is built, as the review's ``LearningAlgorithm.build_model`` does, from a
ConfigParser whose [Network] / [Training] keys are written here from a ``ModelConfig``.
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib.util
import pathlib
import sys
from typing import Any

from dvae_jax import errors

FILES = {"vrnn": "dvae/model/vrnn.py", "srnn": "dvae/model/srnn.py", "loss": "dvae/utils/loss.py"}
NEEDED = {"vrnn": "build_VRNN", "srnn": "build_SRNN", "loss": ("loss_ISD", "loss_KLD")}
HINT = "pass the root of a clone of https://github.com/XiaoyuBIE1994/DVAE"


@dataclasses.dataclass(frozen=True)
class ReviewCode:
    """The review's builders and losses, as imported from one checkout."""

    root: pathlib.Path
    build: dict  # model name -> build_VRNN / build_SRNN
    loss_isd: Any
    loss_kld: Any


def failure(root, what: str) -> errors.ConfigError:
    """The one-line error naming the checkout, what went wrong and what to pass."""
    return errors.ConfigError(f"--review-repo {root}: {what}; {HINT}")


def _import(root: pathlib.Path, rel: str):
    name = "dvae_review_" + rel.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, root / rel)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any failure in the user's code is a config problem
        sys.modules.pop(name, None)
        raise failure(root, f"importing {rel} failed ({type(e).__name__}: {e})") from None
    return module


def load(path: str | pathlib.Path) -> ReviewCode:
    """The review's builders and losses imported from ``path``; a one-line ConfigError if absent."""
    root = pathlib.Path(path).expanduser()
    if not root.is_dir():
        raise failure(root, "no such directory")
    missing = [rel for rel in FILES.values() if not (root / rel).is_file()]
    if missing:
        raise failure(root, f"not the review's code ({', '.join(missing)} missing)")
    mods = {key: _import(root, rel) for key, rel in FILES.items()}
    for key, names in NEEDED.items():
        for name in (names,) if isinstance(names, str) else names:
            if not callable(getattr(mods[key], name, None)):
                raise failure(root, f"not the review's code ({FILES[key]} has no {name})")
    return ReviewCode(
        root=root,
        build={"vrnn": mods["vrnn"].build_VRNN, "srnn": mods["srnn"].build_SRNN},
        loss_isd=mods["loss"].loss_ISD,
        loss_kld=mods["loss"].loss_KLD,
    )


def _join(sizes) -> str:
    return ",".join(str(int(s)) for s in sizes)


def review_config(cfg) -> configparser.ConfigParser:
    """The review's [Network] / [Training] sections (cfg_vrnn.ini / cfg_srnn.ini) for ``cfg``."""
    net = {
        "name": cfg.model.upper(),
        "x_dim": cfg.x_dim,
        "z_dim": cfg.z_dim,
        "activation": cfg.activation,
        "dropout_p": getattr(cfg, "dropout_p", 0.0),
    }
    if cfg.model == "vrnn":
        net.update(
            dense_x=_join(cfg.dense_x),
            dense_z=_join(cfg.dense_z),
            dense_hx_z=_join(cfg.dense_hx_z),
            dense_hz_x=_join(cfg.dense_hz_x),
            dense_h_z=_join(cfg.dense_h_z),
            dim_RNN=cfg.dim_rnn,
            num_RNN=cfg.num_rnn,
        )
    else:
        net.update(
            dense_x_h=_join(cfg.dense_x_h),
            dim_RNN_h=cfg.dim_rnn,
            num_RNN_h=cfg.num_rnn,
            dense_hx_g=_join(cfg.dense_hx_g),
            dim_RNN_g=cfg.dim_rnn_g,
            num_RNN_g=cfg.num_rnn,
            dense_gz_z=_join(cfg.dense_gz_z),
            dense_hz_z=_join(cfg.dense_hz_z),
            dense_hz_x=_join(cfg.dense_hz_x),
        )
    parser = configparser.ConfigParser()
    parser.optionxform = str  # the review's myconf keeps the keys' case (dim_RNN)
    parser.read_dict({"Network": {k: str(v) for k, v in net.items()}, "Training": {"beta": "1"}})
    return parser


def unsupported(cfg) -> str | None:
    """Why the review's code cannot run ``cfg`` (None when it can)."""
    if cfg.likelihood != "itakura_saito":
        return "the review's speech code has the Itakura-Saito likelihood only"
    if cfg.activation not in ("tanh", "relu"):
        return f"the review's code has no activation {cfg.activation!r}"
    if (
        getattr(cfg, "rnn_cell", "lstm") != "lstm"
        or getattr(cfg, "resq", False)
        or getattr(cfg, "share_x_embedding", False)
    ):
        return "the review's code has LSTMs, no resq and no shared x embedding"
    return None


def build(code: ReviewCode, cfg, device: str = "cpu"):
    """The review's model for ``cfg``, in training mode, through its own builder."""
    model = code.build[cfg.model](review_config(cfg), device=device)
    model.train()
    return model


def train_loss(code: ReviewCode, model, x):
    """The review's training loss (learning_algo.py, WSJ0 branch, KL warm-up at 1, beta 1)."""
    import torch

    seq_len, batch = x.shape[:2]
    recon = code.loss_isd(x, torch.exp(model(x))) / (seq_len * batch)  # the model outputs log-power
    kl = code.loss_kld(model.z_mean, model.z_logvar, model.z_mean_p, model.z_logvar_p)
    kl_warm = beta = 1.0
    kl = kl_warm * beta * kl / (seq_len * batch)
    return recon + kl
