"""fastoptim.distributed on 2 and 3 ranks: every check of distributed_checks.py
(broadcast, mismatch errors on every rank, DataParallel and ZeRO-1 against one
process for every optimizer, bit-identical replicas, sharded state, checkpoints,
EASGD/EAMSGD against a serial simulation), each rank count in one mpiexec launch."""
import os

import pytest

from mpi_harness import HERE, check_names, require_mpi, run_checks

require_mpi()

SCRIPT = os.path.join(HERE, "distributed_checks.py")
CHECKS = check_names(SCRIPT)


@pytest.fixture(scope="module", params=[2, 3], ids=["2 ranks", "3 ranks"])
def results(request, tmp_path_factory):
    return run_checks(SCRIPT, CHECKS, request.param, tmp_path_factory.mktemp(f"ranks{request.param}"),
                      timeout=240)


@pytest.mark.parametrize("name", CHECKS)
def test_on_every_rank(results, name):
    failures = [f"rank {r}:\n{outcome}" for r, outcome in enumerate(results[name]) if outcome]
    assert not failures, "\n".join(failures)
