import subprocess
import sys
from pathlib import Path

import torch

from workbench.distributed import run_torchrun

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_torchrun_two_cpu_processes_match_single_process(tmp_path):
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, str(WORKER), str(single)], check=True, timeout=300)
    res = run_torchrun([str(WORKER), str(ddp)], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = torch.load(single, weights_only=True), torch.load(ddp, weights_only=True)
    assert a["world"] == 1 and b["world"] == 2
    for wa, wb in zip(a["weights"], b["weights"]):
        assert torch.allclose(wa, wb, atol=1e-5), (wa - wb).abs().max()
    assert abs(a["acc"] - b["acc"]) < 1e-9


def test_torchrun_cli_writes_one_run_directory_from_rank_0(tmp_path):
    root = tmp_path / "runs"
    res = run_torchrun(
        [
            "-m",
            "workbench.cli",
            "train",
            "dataset=digits",
            "model=mlp",
            "epochs=1",
            "batch_size=64",
            "progress=false",
            f"run_root={root}",
        ],
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    runs = [p.parent for p in root.rglob("config.yaml")]
    assert len(runs) == 1
    assert (runs[0] / "summary.json").is_file() and (runs[0] / "checkpoints" / "model.pt").is_file()
    assert res.stdout.count("run directory:") == 2  # printed once at the start and once at the end, by rank 0
