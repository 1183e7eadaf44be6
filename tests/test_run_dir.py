"""run_dir: the normaliser and what a run directory keeps of its corpus (dataset.json)."""

import numpy as np
import pytest

from dvae_jax import checkpoint, errors, run_dir
from dvae_jax import config as config_lib

MEL = config_lib.FeatureConfig(kind="mel", n_mels=4)


def test_normalizer_standardises_and_inverts():
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, size=4).astype(np.float32)
    norm = run_dir.Normalizer.for_features(MEL, mean, std)
    x = rng.normal(3.0, 2.0, size=(5, 4)).astype(np.float32)
    assert norm.applies
    np.testing.assert_allclose(norm.normalize(x), (x - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(norm.denormalize(norm.normalize(x)), x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("feat", [config_lib.FeatureConfig(kind="stft"),
                                  config_lib.FeatureConfig(kind="mel", normalize=False)], ids=["stft", "no-norm"])
def test_features_that_are_not_normalised_get_the_identity(feat):
    norm = run_dir.Normalizer.for_features(feat, np.ones(3), np.ones(3))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert not norm.applies and not run_dir.normalises(feat)
    np.testing.assert_array_equal(norm.normalize(x), x)
    np.testing.assert_array_equal(norm.denormalize(x), x)


def test_save_load_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    data = run_dir.RunData(
        run_dir.Normalizer(rng.normal(size=80).astype(np.float32), rng.uniform(size=80).astype(np.float32)),
        {"hash": "abc", "utterances": {"train": 3}}, rng.normal(size=80).astype(np.float32), "3 test utterances")
    run_dir.save(tmp_path, data)
    back = run_dir.load(tmp_path)
    np.testing.assert_array_equal(back.normalizer.mean, data.normalizer.mean)  # float32 through JSON, bit for bit
    np.testing.assert_array_equal(back.normalizer.std, data.normalizer.std)
    np.testing.assert_array_equal(back.reference_logmel, data.reference_logmel)
    assert back.fingerprint == data.fingerprint and back.reference_note == data.reference_note
    assert run_dir.load(tmp_path / "elsewhere") is None


def test_corrupt_dataset_json_names_the_file_and_the_fix(tmp_path):
    (tmp_path / run_dir.DATA_FILE).write_text('{"normalizer": ')
    with pytest.raises(errors.RunError, match=r"dataset.json is corrupt.*upgrade-run"):
        run_dir.load(tmp_path)


def test_an_old_run_without_normalised_features_needs_nothing(tmp_path):
    # given an older run on STFT power whose corpus is gone: nothing to de-normalise, usable as is
    cfg = config_lib.Config(features=config_lib.FeatureConfig(kind="stft"),
                            data=config_lib.DataConfig(corpus="vctk", root=str(tmp_path / "gone"),
                                                       cache_dir=str(tmp_path / "cache")))
    data = run_dir.require(tmp_path, cfg)
    assert not data.normalizer.applies and data.reference_logmel is None
    # the same run on normalised log-Mel cannot be used: the error says how to upgrade it
    cfg = config_lib.Config(data=cfg.data)
    checkpoint.save_config(tmp_path, cfg)
    with pytest.raises(errors.RunError, match=r"no dataset.json.*dvae-jax upgrade-run --workdir"):
        run_dir.require(tmp_path, cfg)
    with pytest.raises(errors.DataError, match="gone"):  # and upgrading needs the corpus
        run_dir.upgrade(tmp_path)


def test_imported_review_run_is_self_contained(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    import jax

    from dvae_jax import cli, interop, models

    # Given the review's VRNN weights (STFT power: nothing to de-normalise)
    cfg = config_lib.model_preset("vrnn_review_speech")
    sd = interop.variables_to_state_dict(models.init(cfg, jax.random.PRNGKey(0)), cfg)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, tmp_path / "review.pt")
    # When importing it, then the run holds its dataset.json and generates with no corpus at all
    assert cli.main(["import-review", str(tmp_path / "review.pt"), "--preset", "vrnn_review_speech",
                     "--out", str(tmp_path / "run")]) == 0
    data = run_dir.load(tmp_path / "run")
    assert data is not None and not data.normalizer.applies and "imported_from" in data.fingerprint
    assert cli.main(["generate", "--workdir", str(tmp_path / "run"), "--seconds", "0.2", "--griffin-lim-iters", "2",
                     "--no-quality", "--no-figures", "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "cold_00.wav").exists()
