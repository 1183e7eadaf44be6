"""The run report (report.md in the run directory): training, reconstructions, and the sections
that `evaluate` and `generate` add. Re-rendered from the artefacts each time, so commands can run
in any order and the report always shows what the run directory holds."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import soundfile as sf

from dvae_jax import config as config_lib
from dvae_jax import fit as fit_lib
from dvae_jax import models, plots
from dvae_jax.audio import inversion, spectral

RECON_DIR = "reconstructions"
# Sections other commands write as markdown files in the run directory, in report order.
EXTRA_SECTIONS = ("evaluation/results.md", "generation/summary.md")


def decoded_features(cfg: config_lib.ModelConfig, x_out: np.ndarray) -> np.ndarray:
    """The decoder's point estimate in model space: the expected power (IS) or the mean."""
    if cfg.likelihood == "itakura_saito":
        return np.exp(x_out)
    return x_out[..., : cfg.x_dim]


def reconstruct(cfg: config_lib.Config, variables: Any, dataset, split: str, index: int, seed: int = 0):
    """(original raw features, reconstructed raw features) of one utterance, posterior z sampled."""
    data = dataset.split(split)
    raw = np.asarray(data.utterance(index), np.float32)
    x = dataset.normalize(raw)[None]
    out, _ = jax.jit(functools.partial(models.forward, cfg.model))(variables, jnp.asarray(x), key=jax.random.PRNGKey(seed))
    rec = decoded_features(cfg.model, np.asarray(out.x_out[0]))
    return raw, dataset.denormalize(rec)


def to_wave(cfg: config_lib.Config, feats: np.ndarray, wave_ref: np.ndarray | None) -> np.ndarray:
    """Back to audio as the review does for STFT power (original phase) or by Griffin-Lim (Mel)."""
    if cfg.features.kind == "stft" and wave_ref is not None:
        phase = spectral.stft(wave_ref, cfg.features).T
        return inversion.features_to_wave(feats, cfg.features, phase=phase, length=len(wave_ref), method="phase")
    return inversion.features_to_wave(feats, cfg.features, length=None if wave_ref is None else len(wave_ref),
                                      method="griffin_lim_jax", n_iter=64)


def write_reconstructions(cfg: config_lib.Config, variables: Any, dataset, workdir: str | Path, n: int = 2,
                          split: str = "val") -> list[dict]:
    """Figures and wav files of the original, the original through the inversion path (ceiling)
    and the model's reconstruction, for the first ``n`` utterances of ``split``."""
    out_dir = Path(workdir) / RECON_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    sr = cfg.features.sample_rate
    items = []
    for i in range(min(n, len(dataset.split(split)))):
        raw, rec = reconstruct(cfg, variables, dataset, split, i)
        wave = dataset.load_wave(split, i)
        uid = dataset.split(split).utt_ids[i]
        ceiling = to_wave(cfg, raw, wave)
        recon = to_wave(cfg, rec, wave)
        files = {}
        for name, w in (("original", wave), ("inverted_original", ceiling), ("reconstruction", recon)):
            files[name] = f"{RECON_DIR}/{uid}_{name}.wav"
            sf.write(Path(workdir) / files[name], np.clip(w, -1, 1), sr, subtype="PCM_16")
        show = (lambda f: np.log(np.maximum(f, 1e-10))) if cfg.features.kind == "stft" else (lambda f: f)
        fig = plots.spectrograms(
            [(f"{uid}: original ({'log power' if cfg.features.kind == 'stft' else 'log-Mel'})", show(raw)),
             ("reconstruction (decoder mean, z from the posterior)", show(rec))],
            out_dir / f"{uid}_spectrogram.png",
        )
        items.append(dict(utt_id=uid, figure=f"{RECON_DIR}/{fig.name}", **files))
    with open(out_dir / "index.json", "w") as f:
        json.dump(items, f, indent=2)
    return items


def write_report(workdir: str | Path, title: str | None = None) -> Path:
    """Renders report.md from what the run directory holds."""
    workdir = Path(workdir)
    from dvae_jax import checkpoint

    cfg = checkpoint.load_config(workdir)
    history = fit_lib.read_metrics(workdir)
    epochs = [r for r in history if r.get("kind") == "epoch"]
    lines = [f"# {title or 'Run report'}: `{workdir.name}`", ""]
    m = cfg.model
    lines += [
        f"- model: **{m.model.upper()}**, prior {m.prior}{' (nu learned)' if m.learn_nu else ''}, "
        f"likelihood {m.likelihood}, z_dim {m.z_dim}, RNN {m.dim_rnn} x {m.num_rnn}, "
        f"{models.count_params(models.init(m, jax.random.PRNGKey(0)))} parameters",
        f"- features: {cfg.features.kind} ({cfg.features.n_bins} bins, {cfg.features.sample_rate} Hz, "
        f"n_fft {cfg.features.n_fft}, hop {cfg.features.hop_length}, {cfg.features.window} window)",
        f"- data: corpus `{cfg.data.corpus}`, {cfg.data.batching} of {cfg.data.seq_len} frames, "
        f"split by {cfg.data.split_by}",
        f"- training: {cfg.train.optimizer} lr {cfg.train.lr} ({cfg.train.lr_schedule}), batch "
        f"{cfg.train.batch_size}, KL schedule {cfg.train.kl_schedule}, seed {cfg.train.seed}",
        "- resolved configuration: [config.json](config.json)",
        "",
        "## Training",
        "",
    ]
    if epochs:
        best = min(epochs, key=lambda r: r["val_loss"])
        last = epochs[-1]
        lines += [
            "| | epoch | step | validation -ELBO / frame | recon | KL |",
            "|---|---|---|---|---|---|",
            f"| best | {best['epoch']} | {best['step']} | {best['val_loss']:.4f} | {best['val_recon']:.4f} | {best['val_kl']:.4f} |",
            f"| last | {last['epoch']} | {last['step']} | {last['val_loss']:.4f} | {last['val_recon']:.4f} | {last['val_kl']:.4f} |",
            "",
            f"Wall time of training: {last.get('seconds', float('nan')):.0f} s; skipped non-finite steps: "
            f"{last.get('skipped', 0)}. Full log: [metrics.jsonl](metrics.jsonl).",
            "",
        ]
        if last.get("val_kl_per_dim"):
            kl = np.asarray(last["val_kl_per_dim"])
            lines += [f"Active latent dimensions (validation KL > 0.01 nats/frame): {int((kl > 0.01).sum())} of {len(kl)}.", ""]
        for png in ("loss.png", "kl_per_dim.png"):
            if (workdir / png).exists():
                lines += [f"![{png}]({png})", ""]
    else:
        lines += ["No completed epoch yet.", ""]
    index = workdir / RECON_DIR / "index.json"
    if index.exists():
        lines += ["## Reconstructions (validation speakers)", "",
                  "Original, the original features through the same inversion path (the ceiling), and the model's "
                  "reconstruction. " + ("STFT power: original phase + inverse STFT (the review's protocol)."
                                        if cfg.features.kind == "stft" else
                                        "Log-Mel: Mel pseudo-inverse + JAX fast Griffin-Lim (64 iterations)."), ""]
        for it in json.loads(index.read_text()):
            lines += [f"### {it['utt_id']}", "", f"![spectrogram]({it['figure']})", "",
                      f"[original]({it['original']}) · [original, inverted]({it['inverted_original']}) · "
                      f"[reconstruction]({it['reconstruction']})", ""]
    for rel in EXTRA_SECTIONS:
        p = workdir / rel
        if p.exists():
            text = p.read_text()
            base = str(Path(rel).parent)
            # links inside a section file are relative to its folder
            lines += [_rebase_links(text, base), ""]
    path = workdir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _rebase_links(text: str, base: str) -> str:
    import re

    return re.sub(r"\]\((?!http)([^)#]+)\)", lambda mt: f"]({base}/{mt.group(1)})", text)
