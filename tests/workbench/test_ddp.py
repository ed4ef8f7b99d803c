import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_match_single_process(tmp_path):
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, str(WORKER), str(single)], check=True, timeout=300)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            str(WORKER),
            str(ddp),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    a, b = torch.load(single, weights_only=True), torch.load(ddp, weights_only=True)
    assert a["world"] == 1 and b["world"] == 2
    for wa, wb in zip(a["weights"], b["weights"]):
        assert torch.allclose(wa, wb, atol=1e-5), (wa - wb).abs().max()
    assert abs(a["acc"] - b["acc"]) < 1e-9


def test_torchrun_cli_writes_one_run_directory_from_rank_0(tmp_path):
    root = tmp_path / "runs"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
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
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    runs = [p.parent for p in root.rglob("config.yaml")]
    assert len(runs) == 1
    assert (runs[0] / "summary.json").is_file() and (runs[0] / "checkpoints" / "model.pt").is_file()
    assert res.stdout.count("run directory:") == 2  # printed once at the start and once at the end, by rank 0
