"""Where the runs of a sweep execute (``launcher=``): a registry, one class per executor.

- ``local``: a pool of ``jobs`` worker threads on this machine, each starting one run at a time as a child
  process (:mod:`workbench.sweep.runner`) with ``cores ÷ jobs`` CPU threads; a failed run is retried (its
  ``--resume`` when it left a checkpoint) up to ``retries`` times, and never stops the others.
- ``slurm``: a SLURM job array through submitit (``slurm_array_parallelism`` jobs at once); each job is a
  :class:`~workbench.sweep.runner.RunTask`, requeued with ``--resume`` on pre-emption or time-out.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

from workbench.errors import WorkbenchError
from workbench.registry import Registry
from workbench.sweep.runner import (
    RunTask,
    child_command,
    forked_run,
    next_attempt,
    preload_modules,
    run_dirs,
    thread_env,
)

LAUNCHERS: Registry[type] = Registry("launcher")


class _Launcher:
    def __init__(self, sweep: Any, progress: Any) -> None:
        self.sweep, self.progress = sweep, progress

    def todo(self) -> list[tuple[Any, Any]]:
        """Points not finished yet (finished ones are marked done, never re-run)."""
        s, out = self.sweep, []
        for p, cfg in zip(s.points, s.configs):
            state, run_dir, _ = next_attempt(s.spec.command, s.fresh_argv(p), s.folder(p), cfg.seed, cfg)
            if state == "done":
                s.mark(p, status="done", run_dir=str(run_dir), exit_code=0, pid=None)
            else:
                out.append((p, cfg))
        self.progress.update()
        return out


@LAUNCHERS.register("local")
class LocalLauncher(_Launcher):
    """A process pool on this machine (``jobs`` runs at once)."""

    def __init__(self, sweep: Any, progress: Any) -> None:
        super().__init__(sweep, progress)
        self.live: dict[int, Any] = {}
        self.lock = threading.Lock()
        self.ctx = None
        if "forkserver" in multiprocessing.get_all_start_methods():
            # runs are forked from a parent that imported torch and the command once: each run is its own
            # process without paying the imports again (several seconds per run)
            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(preload_modules(sweep.cmd.config, sweep.cmd.run))

    def start(self, argv: list[str], threads: int, log: Any) -> Any:
        """Start one run's process: forked from the warm parent, else a fresh interpreter."""
        if self.ctx is None:
            return subprocess.Popen(
                child_command(argv, threads),
                env=thread_env(threads),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.ctx.Process(target=forked_run, args=(argv, threads, log.name), daemon=False)
        with self.lock:
            proc.start()
        return proc

    def run(self) -> None:
        todo = self.todo()
        if not todo:
            return
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(self.sweep.options.effective_jobs(), len(todo)))
        futures = [pool.submit(self.run_point, p, cfg) for p, cfg in todo]
        try:
            while not all(f.done() for f in futures):
                concurrent.futures.wait(futures, timeout=0.5)
                self.progress.update()
            for f in futures:
                f.result()  # a bug in the driver surfaces here
        except KeyboardInterrupt:
            self.sweep.stop.set()
            self.terminate_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def terminate_all(self) -> None:
        """Ask every running child to save and stop (SIGTERM: the command checkpoints and exits 130)."""
        with self.lock:
            procs = list(self.live.values())
        for proc in procs:
            if _alive(proc):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            if _wait(proc, timeout=120) is None:
                proc.kill()

    def run_point(self, point: Any, cfg: Any) -> None:
        s = self.sweep
        threads = s.options.threads()
        seconds = 0.0
        for _ in range(s.options.retries + 1):
            if s.stop.is_set():
                return
            state, run_dir, argv = next_attempt(s.spec.command, s.fresh_argv(point), s.folder(point), cfg.seed, cfg)
            if state == "done":
                s.mark(point, status="done", run_dir=str(run_dir), exit_code=0, pid=None)
                return
            log = s.log(point)
            log.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            with open(log, "a") as out:
                out.write(f"\n$ workbench {' '.join(argv)}\n")
                out.flush()
                # own session: a Ctrl-C in the terminal reaches only the driver, which stops each run once
                proc = self.start(argv, threads, out)
                with self.lock:
                    self.live[point.index] = proc
                attempts = s.status[point.index]["attempts"] + 1
                s.mark(point, status="running", pid=proc.pid, attempts=attempts, run_dir=str(run_dir or ""))
                rc = _wait(proc)
                with self.lock:
                    self.live.pop(point.index, None)
            seconds += time.perf_counter() - start
            dirs = run_dirs(s.folder(point))
            where = str(dirs[-1]) if dirs else ""
            if rc == 0:
                s.mark(point, status="done", exit_code=0, run_dir=where, seconds=round(seconds, 2), pid=None)
                return
            s.mark(point, exit_code=rc, run_dir=where, seconds=round(seconds, 2), pid=None)
            if s.stop.is_set():  # stopped by the driver: not a failure, resumed by --resume
                s.mark(point, status="pending")
                return
        s.mark(point, status="failed")


def _alive(proc: Any) -> bool:
    return proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()


def _wait(proc: Any, timeout: float | None = None) -> int | None:
    """Exit status of a Popen or a multiprocessing Process (a signal's death is 128 + its number)."""
    if isinstance(proc, subprocess.Popen):
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    else:
        proc.join(timeout)
        rc = proc.exitcode
    if rc is None:
        return None
    return 128 - rc if rc < 0 else rc


def _sbatch_lines(extra: str) -> dict[str, str]:
    """``"--qos=high;--constraint=a100"`` → ``{"qos": "high", "constraint": "a100"}`` for submitit."""
    out = {}
    for item in filter(None, (x.strip() for x in extra.split(";"))):
        key, _, value = item.lstrip("-").partition("=")
        out[key] = value
    return out


@LAUNCHERS.register("slurm")
class SlurmLauncher(_Launcher):
    """A SLURM job array through submitit: one job per unfinished run, ``slurm.array_parallelism`` at once."""

    def executor(self, count: int) -> Any:
        try:
            import submitit
        except ImportError:
            raise WorkbenchError("launcher=slurm needs submitit; install it: pip install 'submitit>=1.5'") from None
        if shutil.which("sbatch") is None:
            raise WorkbenchError(
                "launcher=slurm needs SLURM (sbatch is not on PATH); run on a cluster's login node, "
                "or start a one-node cluster with scripts/slurm-setup.sh, or use launcher=local"
            )
        o, threads = self.sweep.options.slurm, self.sweep.options.threads()
        ex = submitit.AutoExecutor(folder=str(self.sweep.dir / "slurm" / "%j"), cluster="slurm")
        params: dict[str, Any] = {
            "timeout_min": o.time,
            "nodes": o.nodes,
            "cpus_per_task": o.cpus or threads,
            "slurm_array_parallelism": o.array_parallelism or count,
            "name": f"sweep-{self.sweep.dir.parent.name}",
        }
        if o.torchrun:
            params["tasks_per_node"] = max(1, o.gpus)
        optional = {
            "slurm_partition": o.partition,
            "gpus_per_node": o.gpus,
            "mem_gb": o.mem,
            "slurm_account": o.account,
            "slurm_additional_parameters": _sbatch_lines(o.extra),
        }
        params.update({k: v for k, v in optional.items() if v})
        ex.update_parameters(**params)
        return ex

    def run(self) -> None:
        todo = self.todo()
        if not todo:
            return
        s = self.sweep
        ex = self.executor(len(todo))
        tasks = [
            RunTask(
                list(s.spec.command),
                s.fresh_argv(p),
                str(s.folder(p)),
                cfg.seed,
                s.options.threads(),
                s.options.retries,
                str(s.log(p)),
                distributed=s.options.slurm.torchrun,
            )
            for p, cfg in todo
        ]
        (s.dir / "logs").mkdir(parents=True, exist_ok=True)
        jobs = ex.submit_array(tasks)
        for (p, _), job in zip(todo, jobs):
            s.mark(p, status="pending", job_id=job.job_id)
        waiting = dict(zip(range(len(jobs)), jobs))
        try:
            while waiting:
                for i, job in list(waiting.items()):
                    p = todo[i][0]
                    if not job.done():
                        if job.state == "RUNNING" and s.status[p.index]["status"] != "running":
                            s.mark(p, status="running")
                        continue
                    del waiting[i]
                    self.finish(p, job)
                self.progress.update()
                time.sleep(1.0)
        except KeyboardInterrupt:
            for job in waiting.values():  # scancel: SIGTERM, the command saves; --resume continues
                job.cancel(check=False)
            raise

    def finish(self, point: Any, job: Any) -> None:
        s = self.sweep
        try:
            res = job.result()
        except Exception as exc:  # noqa: BLE001 - the job itself failed (node, memory, time)
            s.mark(point, status="failed", exit_code=None, run_dir="", seconds=None)
            with open(s.log(point), "a") as out:
                out.write(f"\nSLURM job {job.job_id} failed: {exc}\n")
            return
        ok = res["exit_code"] == 0
        s.mark(
            point,
            status="done" if ok else "failed",
            exit_code=res["exit_code"],
            run_dir=res["run_dir"],
            attempts=s.status[point.index]["attempts"] + res["attempts"],
            seconds=res.get("seconds"),
        )
