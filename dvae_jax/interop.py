"""The review's PyTorch checkpoints <-> dvae_jax parameters: name mapping, import, export.

The review's modules (MODELS.md, "Parameter names") hold one ``nn.Linear`` per output head and
``nn.LSTM`` weights of shape (4H, in); dvae_jax stores kernels transposed (in, out), fuses the
[mean | log-variance] heads into the last layer of its 'posterior' / 'prior' MLPs and keeps the
LSTM's stacked gates (i, f, g, o, as nn.LSTM). The mapping is a list of (torch name, flax path,
how) built from the ModelConfig alone, so both directions are exact (transposes and
concatenations of the same float32 values).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from dvae_jax import config as config_lib
from dvae_jax import errors

# How a torch tensor becomes (part of) a flax leaf.
LINEAR_W = "linear_weight"  # (out, in) -> kernel (in, out)
BIAS = "bias"  # identical
HEAD_W = "head_weight"  # (out, in) -> columns [k*out:(k+1)*out] of a fused kernel
HEAD_B = "head_bias"
LSTM_W = "lstm_weight"  # (4H, in) -> (in, 4H)
COPY = "copy"

STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model", "net", "model_state")


class InteropError(errors.DataError):
    """A checkpoint that does not fit the chosen layout; the message names the keys."""


@dataclasses.dataclass(frozen=True)
class Entry:
    torch_name: str
    flax_path: tuple[str, ...]
    kind: str
    part: int = 0  # HEAD_*: which head (0 mean, 1 log-variance)
    n_parts: int = 1


def mlp_entries(torch_mlp: str, flax_mlp: str, n: int) -> list[Entry]:
    out = []
    for i in range(n):
        out.append(Entry(f"{torch_mlp}.linear{i}.weight", (flax_mlp, f"linear{i}", "kernel"), LINEAR_W))
        out.append(Entry(f"{torch_mlp}.linear{i}.bias", (flax_mlp, f"linear{i}", "bias"), BIAS))
    return out


def heads_entries(torch_mlp: str, heads: tuple[str, str], flax_mlp: str, n_hidden: int) -> list[Entry]:
    """An MLP of ``n_hidden`` layers then two heads fused into flax linear{n_hidden}."""
    out = mlp_entries(torch_mlp, flax_mlp, n_hidden)
    last = f"linear{n_hidden}"
    for k, head in enumerate(heads):
        out.append(Entry(f"{head}.weight", (flax_mlp, last, "kernel"), HEAD_W, k, 2))
        out.append(Entry(f"{head}.bias", (flax_mlp, last, "bias"), HEAD_B, k, 2))
    return out


def single_out_entries(torch_mlp: str, out_name: str, flax_mlp: str, n_hidden: int) -> list[Entry]:
    out = mlp_entries(torch_mlp, flax_mlp, n_hidden)
    last = f"linear{n_hidden}"
    out.append(Entry(f"{out_name}.weight", (flax_mlp, last, "kernel"), LINEAR_W))
    out.append(Entry(f"{out_name}.bias", (flax_mlp, last, "bias"), BIAS))
    return out


def lstm_entries(torch_lstm: str, flax_lstm: str, num_layers: int, suffix: str = "") -> list[Entry]:
    """A stacked nn.LSTM / nn.GRU / nn.RNN (weights (G*H, in)); ``suffix='_reverse'``: the
    backward direction of a bidirectional one (``weight_ih_l0_reverse``...)."""
    out = []
    for k in range(num_layers):
        layer = f"layer{k}"
        out += [
            Entry(f"{torch_lstm}.weight_ih_l{k}{suffix}", (flax_lstm, layer, "wi"), LSTM_W),
            Entry(f"{torch_lstm}.weight_hh_l{k}{suffix}", (flax_lstm, layer, "wh"), LSTM_W),
            Entry(f"{torch_lstm}.bias_ih_l{k}{suffix}", (flax_lstm, layer, "bi"), BIAS),
            Entry(f"{torch_lstm}.bias_hh_l{k}{suffix}", (flax_lstm, layer, "bh"), BIAS),
        ]
    return out


def name_map(cfg: config_lib.ModelConfig) -> list[Entry]:
    """The (torch name, flax path, transform) table of a layout: the model's ``review_names``."""
    from dvae_jax import models

    if cfg.separate_heads:  # two MLPs per head: no (inf_mean, inf_logvar) pair to map them to
        raise InteropError("model.separate_heads=true has no counterpart in the review's code: "
                           "train without it to import or export the review's state_dict")
    entries = list(models.build(cfg).review_names())
    if cfg.prior == "student_t" and cfg.learn_nu:
        entries.append(Entry("prior_nu", ("prior_nu",), COPY))
    return entries


def _template_shapes(cfg: config_lib.ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    import jax

    from dvae_jax import models

    shapes = jax.eval_shape(lambda k: models.init(cfg, k), jax.random.PRNGKey(0))["params"]
    return {
        tuple(getattr(p, "key", str(p)) for p in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
    }


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _expected_torch_shape(entry: Entry, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if entry.kind in (LINEAR_W, LSTM_W):
        return (flax_shape[1], flax_shape[0])
    if entry.kind == HEAD_W:
        return (flax_shape[1] // entry.n_parts, flax_shape[0])
    if entry.kind == HEAD_B:
        return (flax_shape[0] // entry.n_parts,)
    return flax_shape


def _strip_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drops a DataParallel 'module.' prefix when every key has it."""
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def state_dict_to_variables(state_dict: Mapping[str, Any], model_cfg: config_lib.ModelConfig) -> dict:
    """A review-layout state_dict (torch tensors or numpy arrays) -> Flax variables {'params': ...}.

    Raises:
        InteropError: naming every missing, unexpected or mis-shaped key.
    """
    sd = _strip_prefix(state_dict)
    entries = name_map(model_cfg)
    shapes = _template_shapes(model_cfg)
    wanted = {e.torch_name for e in entries}
    missing = sorted(wanted - set(sd))
    unexpected = sorted(set(sd) - wanted)
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    arrays = {}
    for e in entries:
        if e.torch_name not in sd:
            continue
        a = _to_numpy(sd[e.torch_name]).astype(np.float32)
        want = _expected_torch_shape(e, shapes[e.flax_path])
        if a.shape != want:
            problems.append(f"{e.torch_name}: shape {a.shape}, expected {want}")
        arrays[e.torch_name] = a
    if problems:
        raise InteropError(
            f"state_dict does not match the {model_cfg.model} layout of this config "
            f"(check --preset / model settings): " + "; ".join(problems)
        )
    flat: dict[tuple[str, ...], Any] = {}
    for e in entries:
        a = arrays[e.torch_name]
        if e.kind in (LINEAR_W, LSTM_W):
            flat[e.flax_path] = np.ascontiguousarray(a.T)
        elif e.kind in (HEAD_W, HEAD_B):
            buf = flat.setdefault(e.flax_path, [None] * e.n_parts)
            buf[e.part] = a.T if e.kind == HEAD_W else a
        else:
            flat[e.flax_path] = a.copy()
    params: dict = {}
    for path, value in flat.items():
        if isinstance(value, list):
            value = np.concatenate(value, axis=-1)
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.ascontiguousarray(value, dtype=np.float32)
    return {"params": params}


def variables_to_state_dict(variables: Mapping[str, Any], model_cfg: config_lib.ModelConfig) -> dict[str, np.ndarray]:
    """Flax variables (or a gradient tree of the same structure) -> review-layout state_dict of
    numpy arrays, in the review's key names."""
    params = variables.get("params", variables)
    out = {}
    for e in name_map(model_cfg):
        node = params
        try:
            for key in e.flax_path:
                node = node[key]
        except (KeyError, TypeError):
            raise InteropError(f"variables have no '{'/'.join(e.flax_path)}' (for {e.torch_name})") from None
        a = np.asarray(node)
        if e.kind in (LINEAR_W, LSTM_W):
            a = a.T
        elif e.kind in (HEAD_W, HEAD_B):
            width = a.shape[-1] // e.n_parts
            a = a[..., e.part * width:(e.part + 1) * width]
            if e.kind == HEAD_W:
                a = a.T
        out[e.torch_name] = np.ascontiguousarray(a)
    return out


def extract_state_dict(obj: Any, path: str = "checkpoint") -> Mapping[str, Any]:
    """The state_dict inside a loaded checkpoint object: the object itself or one held under a
    common key (model_state_dict, state_dict, model, net, model_state)."""
    if hasattr(obj, "state_dict") and callable(obj.state_dict):  # a pickled nn.Module
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        raise InteropError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    for key in STATE_DICT_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            return obj[key]
    if obj and all(hasattr(v, "shape") for v in obj.values()):
        return obj
    raise InteropError(
        f"{path}: no state_dict found; top-level keys are {sorted(map(str, obj))[:12]} "
        f"(looked for a dict of tensors or one under {', '.join(STATE_DICT_KEYS)})"
    )


def load_review_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads a review ``.pt`` file (raw state_dict, or a dict holding one) as numpy arrays."""
    try:
        import torch
    except ImportError:
        raise InteropError("reading .pt checkpoints needs PyTorch: pip install 'dvae-jax[torch]'") from None
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InteropError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - older pickles (a whole nn.Module) need the full unpickler
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001
            raise InteropError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    sd = extract_state_dict(obj, path)
    return {k: _to_numpy(v) for k, v in sd.items()}


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    import torch

    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, os.fspath(path))


# ---------------------------------------------------------------------------------------------
# Command line


def check_review_layout(cfg: config_lib.ModelConfig) -> None:
    """The options the review's code does not have (the SRNN code's): one line naming the key."""
    name_map(cfg)
    for key, default in (("share_x_embedding", False), ("rnn_cell", "lstm")):
        if getattr(cfg, key) != default:
            raise InteropError(f"model.{key}={getattr(cfg, key)} has no counterpart in the review's code: "
                               f"its state_dict cannot hold this model (train with model.{key}={default})")


def run_import(args: argparse.Namespace) -> int:
    from dvae_jax import checkpoint

    model_cfg = config_lib.model_preset(args.preset)
    if args.preset in config_lib.available_configs():
        # the review's whole setting (STFT power, sine window, chunks, training) travels along
        cfg = dataclasses.replace(config_lib.load_named(args.preset), name=f"import-{args.preset}")
    else:
        cfg = config_lib.Config(name=f"import-{args.preset}", model=model_cfg)
    if args.preset.endswith("_speech"):  # the review's features: STFT power
        cfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, kind="stft"))
    cfg = config_lib.apply_overrides(cfg, args.set or [])
    check_review_layout(cfg.model)
    variables = state_dict_to_variables(load_review_checkpoint(args.ckpt), cfg.model)
    checkpoint.save_imported_run(args.out, cfg, variables, meta={"imported_from": os.path.abspath(args.ckpt)})
    n = sum(int(np.size(a)) for a in _leaves(variables))
    print(f"imported {args.ckpt} ({n:,} parameters, {cfg.model.model}) -> {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from dvae_jax import checkpoint

    cfg, variables, meta = checkpoint.load_run(args.workdir, which=args.which)
    check_review_layout(cfg.model)
    sd = variables_to_state_dict(variables, cfg.model)
    save_state_dict(sd, args.out)
    print(f"exported {args.workdir} ({meta.get('checkpoint')} step {meta.get('step')}) -> {args.out}")
    return 0


def _leaves(tree):
    if isinstance(tree, Mapping):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


def register(subparsers) -> None:
    """The options live in commands/interop.py; kept here for callers that register from this module."""
    from dvae_jax.commands import interop as command

    command.register(subparsers)


run = run_import
