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
