"""Figures of a run: training curves, KL per latent dimension, spectrograms (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def training_curves(history: list[dict], workdir: str | Path) -> list[Path]:
    """loss.png (train / validation loss, recon, KL, KL weight per epoch) and kl_per_dim.png."""
    workdir = Path(workdir)
    epochs = [r for r in history if r.get("kind") == "epoch"]
    if not epochs:
        return []
    e = np.array([r["epoch"] for r in epochs])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(e, [r["train_loss"] for r in epochs], label="train loss (annealed)")
    axes[0].plot(e, [r["val_loss"] for r in epochs], label="validation -ELBO")
    axes[0].set_title("loss per frame")
    axes[1].plot(e, [r["train_recon"] for r in epochs], label="train")
    axes[1].plot(e, [r["val_recon"] for r in epochs], label="validation")
    axes[1].set_title("reconstruction")
    axes[2].plot(e, [r["train_kl"] for r in epochs], label="train KL")
    axes[2].plot(e, [r["val_kl"] for r in epochs], label="validation KL")
    ax2 = axes[2].twinx()
    ax2.plot(e, [r["train_kl_weight"] for r in epochs], "k:", label="KL weight")
    ax2.set_ylim(-0.05, 1.05)
    axes[2].set_title("KL (nats per frame); dotted: KL weight")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = [workdir / "loss.png"]
    fig.savefig(out[0], dpi=100)
    plt.close(fig)
    kl = np.array([r["val_kl_per_dim"] for r in epochs if r.get("val_kl_per_dim")])
    if kl.size:
        out.append(kl_per_dim(kl, workdir / "kl_per_dim.png", epochs=e[: len(kl)]))
    return out


def kl_per_dim(kl: np.ndarray, path: str | Path, epochs=None, threshold: float = 0.01) -> Path:
    """Heat map of validation KL per latent dimension over epochs, and the final values."""
    kl = np.atleast_2d(kl)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), gridspec_kw={"width_ratios": [2, 1]})
    im = axes[0].imshow(np.log10(np.maximum(kl.T, 1e-4)), aspect="auto", origin="lower", cmap="viridis",
                        extent=None if epochs is None else (epochs[0] - 0.5, epochs[-1] + 0.5, -0.5, kl.shape[1] - 0.5))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("latent dimension")
    axes[0].set_title("log10 KL per dimension (validation)")
    fig.colorbar(im, ax=axes[0])
    final = kl[-1]
    axes[1].bar(np.arange(len(final)), final, color=["C0" if v > threshold else "C3" for v in final])
    axes[1].axhline(threshold, color="k", ls=":", lw=1)
    axes[1].set_title(f"final KL per dim ({int((final > threshold).sum())} active > {threshold})")
    axes[1].set_xlabel("latent dimension")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def spectrograms(panels: list[tuple[str, np.ndarray]], path: str | Path, marks: dict[int, float] | None = None,
                 ylabel: str = "bin") -> Path:
    """Stacked spectrograms (frames, bins) shown as images; ``marks`` = {panel: frame} draws a line."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels)), squeeze=False)
    for i, (title, feat) in enumerate(panels):
        ax = axes[i, 0]
        ax.imshow(np.asarray(feat).T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel)
        if marks and i in marks:
            ax.axvline(marks[i], color="c", lw=1.5, ls="--")
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)




def feature_image(features: np.ndarray, kind: str) -> np.ndarray:
    """Raw features (frames, bins) -> what a figure shows, (frames, bins): STFT power in dB, log-Mel
    as it is, WORLD frames z-scored per dimension over the frames shown (their dimensions have
    unrelated units: log Hz, a 0/1 flag, cepstral coefficients, dB)."""
    x = np.asarray(features, np.float64)
    if kind == "stft":
        return 10 * np.log10(np.maximum(x, 1e-10))
    if kind == "world":
        x = np.where(np.isfinite(x), x, np.nan)
        with np.errstate(invalid="ignore"):
            z = (x - np.nanmean(x, axis=0)) / np.maximum(np.nanstd(x, axis=0), 1e-6)
        return np.clip(np.nan_to_num(z), -4.0, 4.0)
    return x


def feature_ylabel(kind: str) -> str:
    return {"mel": "Mel band", "stft": "STFT bin", "world": "WORLD dim (z-score)"}.get(kind, "bin")


def world_layout(feat_cfg) -> str:
    """Which rows of a WORLD figure hold what, e.g. 'dims 0 log-F0, 1 voicing, 2-61 envelope, 62 aperiodicity'."""
    end = 2 + feat_cfg.world_env_dims
    ap = f"{end}" if feat_cfg.n_bins == end + 1 else f"{end}-{feat_cfg.n_bins - 1}"
    return f"dims 0 log-F0, 1 voicing, 2-{end - 1} envelope, {ap} aperiodicity"


def generation_spectrogram(path: str | Path, features: np.ndarray, feat_cfg, boundary: int | None,
                           title: str) -> Path:
    """One generated sequence (raw features, frames x bins) against time; a dashed line marks the
    end of the prime at frame ``boundary``. STFT power is shown in dB, WORLD frames z-scored per
    dimension (:func:`feature_image`)."""
    img = feature_image(features, feat_cfg.kind).T
    fig, ax = plt.subplots(figsize=(max(6.0 if feat_cfg.kind == "world" else 4.0, features.shape[0] / 60), 3))
    hop_s = feat_cfg.hop_length / feat_cfg.sample_rate
    ax.imshow(img, origin="lower", aspect="auto", cmap="magma",
              extent=(0, features.shape[0] * hop_s, 0, img.shape[0]))
    if boundary is not None:
        ax.axvline(boundary * hop_s, color="cyan", linewidth=1.5, linestyle="--", label="end of prime")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xlabel("seconds")
    ax.set_ylabel(feature_ylabel(feat_cfg.kind))
    ax.set_title(title + (f"\nWORLD frames z-scored per dim; {world_layout(feat_cfg)}"
                          if feat_cfg.kind == "world" else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
