"""The tiny log-Mel VRNN run on a 4-speaker mini corpus that the fit and run-failure tests train."""

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
