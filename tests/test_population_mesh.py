"""Populations on a device mesh (issue 16): members split on the ``members`` axis, batch rows on
``data``; a sharded population trains each member as the single-device population does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvae_jax import cli

ROOT = Path(__file__).resolve().parents[1]
# float32 sums in another order (the gradients' all-reduce over ``data``), 24 Adam steps: measured
# 1.3e-7 (parameters, per member tensor |a - b| / |a|) and 1.8e-7 (validation -ELBO); a wrong
# reduction (a shard's mean for the batch's) or members mixed would be off by 1e-3 or more
REL = 1e-5


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The JSON of tests/mesh_population_check.py in a process that sees 4 host devices."""
    out = tmp_path_factory.mktemp("mesh")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0 "
                        "--xla_llvm_disable_expensive_passes=true"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mesh_population_check.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_population_on_a_members_by_data_mesh_trains_each_member_as_on_one_device(sharded):
    # given 3 members trained 2 epochs on one device and on a members=2,data=2 mesh
    # then the mesh run padded them to 4 members (the 4th never steps) and really split the state
    # on members and the batches on members x data over the 4 devices
    assert sharded["sharded"] == {"k": 4, "params": ["members"], "batch": ["members", "data"],
                                  "metrics": ["members"], "shards": 4}
    assert sharded["steps"][3] == 0 and len(set(sharded["steps"][:3])) == 1 and sharded["steps"][0] > 0
    # and only the 3 members have run directories, each with its 2 epochs
    assert sharded["dirs"] == ["0", "1", "2"] and sharded["epochs"] == [2, 2, 2]
    # and every member's parameters and validation losses are the single-device run's
    assert sharded["rel_err"] < REL and sharded["abs_err"] < REL, sharded
    assert sharded["val_rel_err"] < REL, sharded
    # and members=auto takes the devices data leaves
    assert sharded["auto"] == {"members": 2, "data": 2}


def test_meshes_that_cannot_hold_the_population_are_one_line_errors(sharded):
    # a batch of 8 rows on a data axis of 3, and more devices than there are
    assert sharded["bad_batch"].startswith("ConfigError: train.batch_size=8 does not split over the mesh's data "
                                           "axis (3 devices)")
    assert sharded["too_many"].startswith("ConfigError: --mesh members=4,data=2: 8 devices asked for, 4 available")


def _study(tmp_path: Path, population: int) -> Path:
    spec = {"name": "m", "base_config": "vrnn_mel_gaussian", "overrides": {"train.epochs": 1},
            "space": {"train.seed": {"type": "categorical", "choices": [0, 1]}},
            "objectives": [{"metric": "val_loss"}], "budget": {"n_trials": 2}, "sampler": {"name": "grid"},
            "population": {"size": population}}
    path = tmp_path / f"pop{population}.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(("population", "args", "message"), [
    (2, ["--mesh", "gpus=2"], "--mesh 'gpus=2': expected members=N|auto or data=N|auto"),
    (2, ["--mesh", "members=2", "--workers", "2"], "--mesh members=2 with --workers 2: the workers would share"),
    (1, ["--mesh", "data=1"], "--mesh data=1: study 'm' has no population (population.size 1)"),
])
def test_sweep_mesh_refusals_are_one_line_before_any_trial(tmp_path, capsys, population, args, message):
    # given a study and a --mesh the sweep cannot use
    # when the sweep command runs, then it exits 2 with one line naming the problem, and no trial ran
    study_dir = tmp_path / "s"
    assert cli.main(["sweep", str(_study(tmp_path, population)), "--study-dir", str(study_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (study_dir / "trials").exists()
