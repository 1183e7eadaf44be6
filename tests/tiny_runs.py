"""The tiny log-Mel VRNN run on a 4-speaker mini corpus that the fit and run-failure tests train."""

import signal
import time
from pathlib import Path

from dvae_jax import config as config_lib
from dvae_jax.data import prepare


def tiny_mel(cache_dir, **train) -> tuple[config_lib.Config, prepare.Dataset]:
    """(config, prepared dataset); ``train`` overrides the TrainConfig fields."""
    cfg = config_lib.Config(
        model=config_lib.ModelConfig(model="vrnn", z_dim=4, dense_x=(32,), dense_z=(16,), dim_rnn=32,
                                     likelihood="gaussian"),
        features=config_lib.FeatureConfig(kind="mel", n_mels=20),
        data=config_lib.DataConfig(corpus="mini", cache_dir=str(cache_dir), mini_speakers=4, mini_sentences=5,
                                   seq_len=20, val_fraction=0.25, test_fraction=0.25),
        train=config_lib.TrainConfig(batch_size=8, checkpoint_every_steps=3, log_every_steps=1, **train),
    )
    return cfg, prepare.prepare_dataset(cfg.data, cfg.features, progress=False)


def sigkill_at_checkpoint(proc, workdir, step: int, timeout_s: float = 240) -> int | None:
    """SIGKILLs ``proc`` (a training process) as soon as ``workdir`` holds a latest checkpoint
    at ``step`` or later; returns that checkpoint's step, or None when the process ended (or the
    time ran out) first."""
    deadline = time.time() + timeout_s
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in (Path(workdir) / "checkpoints" / "latest").glob("*") if p.name.isdigit()]
        if steps and max(steps) >= step:
            proc.send_signal(signal.SIGKILL)
            killed_at = max(steps)
            break
        time.sleep(0.05)
    proc.wait()
    return killed_at
