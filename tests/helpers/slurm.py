"""A real one-node Slurm cluster on localhost for tests (``tests/ablation/test_slurm_real.py``).

Debian's ``slurm-wlm`` and ``munge`` packages, run as root with no systemd and no cgroups: :func:`one_node_cluster`
writes a ``slurm.conf`` in a fresh temporary folder (its own ports, state, spool, logs and munge socket, so a
cluster already on the machine is left alone), starts ``munged`` with a generated key, then ``slurmctld`` and
``slurmd`` in the foreground as child processes, waits (bounded) until ``sinfo`` shows the node idle, and on exit
cancels every job and stops the three daemons it started. Commands reach this cluster, not any other, through
``SLURM_CONF`` (:attr:`Cluster.env`).

The container workarounds are configuration only: ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none``
(no cgroups), no accounting database (``sacct`` answers "accounting storage is disabled": submitit then learns a
job's end from its result file), and a 5-second job credential lifetime (``AuthInfo=...,cred_expire=5``): Slurm
holds a requeued job for the credential lifetime + 1 s before starting it again (121 s by default, measured).
``KillWait=1``: a requeued job's processes got SIGKILL 4.7 s after SIGTERM all the same (slurmd waits at least 5 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel")
INSTALL = "apt-get install -y --no-install-recommends slurm-wlm munge"


def program(name: str) -> str | None:
    """The program's path: on PATH, or in /usr/sbin (the daemons' home, off a non-root PATH)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def unavailable() -> str | None:
    """Why a one-node cluster cannot be started here, or None."""
    missing = [name for name in PROGRAMS if program(name) is None]
    if missing:
        return f"no Slurm here ({', '.join(missing)} not found): {INSTALL}"
    if os.geteuid() != 0:
        return "the one-node Slurm cluster runs its daemons as root (SlurmUser=root); run pytest as root"
    return None


@dataclass
class Cluster:
    folder: Path
    env: dict[str, str]  # os.environ with SLURM_CONF pointing at this cluster

    def run(self, *command: str, timeout: float = 30) -> str:
        """A Slurm client command against this cluster; its stdout (raises on failure)."""
        done = subprocess.run(command, check=False, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def logs(self) -> str:
        """The daemons' log tails, for a failure message."""
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = self.folder / name
            if path.is_file():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(folder: Path, cpus: int) -> str:
    return f"""\
ClusterName=kdlabtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.sock,cred_expire=5
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
KillWait=1
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=500 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _wait(what: str, ready, timeout: float, cluster: Cluster, processes: dict) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [f"{name} exited with {process.returncode}" for name, process in processes.items()
                if process.poll() is not None]
        if dead:
            raise RuntimeError(f"the one-node Slurm cluster did not start: {'; '.join(dead)}\n{cluster.logs()}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"the one-node Slurm cluster did not start: {what} not ready in {timeout:.0f} s\n"
                       f"{cluster.logs()}")


def _node_idle(cluster: Cluster) -> bool:
    try:
        return cluster.run("sinfo", "-h", "-N", "-o", "%t", timeout=10).split() == ["idle"]
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


@contextmanager
def one_node_cluster(start_timeout: float = 60) -> Iterator[Cluster]:
    """munged + slurmctld + slurmd on localhost (partition ``debug``, one node with this machine's CPUs)."""
    folder = Path(tempfile.mkdtemp(prefix="kdlab-slurm-"))
    folder.chmod(0o755)  # munged refuses a socket in a folder others cannot enter
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    (folder / "slurm.conf").write_text(_config(folder, os.cpu_count() or 1))
    cluster = Cluster(folder, {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")})
    processes: dict[str, subprocess.Popen] = {}
    try:
        subprocess.run([program("mungekey"), "--create", f"--keyfile={folder / 'munge.key'}"], check=True,
                       capture_output=True, timeout=30)
        processes["munged"] = subprocess.Popen(
            [program("munged"), "--foreground", f"--key-file={folder / 'munge.key'}",
             f"--socket={folder / 'munge.sock'}",
             f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
             f"--seed-file={folder / 'munge.seed'}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait("munged", (folder / "munge.sock").exists, start_timeout, cluster, processes)
        for name, command in (("slurmctld", [program("slurmctld"), "-D"]),
                              ("slurmd", [program("slurmd"), "-D", "-N", "localhost"])):
            with open(folder / f"{name}.out", "w") as out:
                processes[name] = subprocess.Popen(command, env=cluster.env, stdout=out, stderr=subprocess.STDOUT)
        _wait("the node (sinfo: idle)", lambda: _node_idle(cluster), start_timeout, cluster, processes)
        yield cluster
    finally:
        if "slurmctld" in processes and processes["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--partition=debug"], check=False, env=cluster.env, capture_output=True,
                           timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the jobs' processes end before slurmd does
                queue = subprocess.run(["squeue", "-h"], check=False, env=cluster.env, capture_output=True,
                                       text=True, timeout=30)
                if queue.returncode or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            process = processes.get(name)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        shutil.rmtree(folder, ignore_errors=True)
