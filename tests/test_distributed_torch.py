"""fastoptim.torch under torch's DistributedDataParallel (gloo): examples/torch_ddp.py on
two processes gives bit-identical replicas and matches torch.optim.AdamW."""
import shutil
import sys
from pathlib import Path

from mpi_harness import run_command

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_ddp.py"


def test_ddp_example_two_processes_bit_identical(torch, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torch installs torchrun beside python"
    run = run_command([torchrun, "--standalone", "--nproc-per-node", "2", str(EXAMPLE), "--steps", "20"],
                      timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.output()
    assert "2 processes, 20 steps of fastoptim.torch.AdamW under DDP" in run.stdout
    assert "replicas bit-identical on every process: True" in run.stdout
    difference = float(run.stdout.split("under DDP: ")[-1].split()[0])
    assert difference <= 1e-10, run.output()
