"""A one-node SLURM cluster on this machine, for the tests: munge with a fresh key, slurmctld and slurmd,
all configured in one temporary directory (no cgroups: proctrack/linuxproc, task/none), on free ports,
stopped by pid at the end. Needs Debian's slurmctld, slurmd, slurm-client and munge packages
(.ci/run installs them with apt-get).

    with OneNodeCluster(tmp_dir) as c:
        subprocess.run(["sbatch", ...], env=c.env)  # c.env has SLURM_CONF set
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
INSTALL = "apt-get install slurmctld slurmd slurm-client munge"
KILL_WAIT_S = 15  # scancel: SIGTERM, then SIGKILL this many seconds later


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]


def _which(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return f"({path}: nothing)"


class ClusterError(RuntimeError):
    pass


class OneNodeCluster:
    def __init__(self, directory: str, cpus: int = 2):
        self.dir = os.path.abspath(directory)
        self.cpus = cpus
        self.procs: list[subprocess.Popen] = []
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.env = {**os.environ, "SLURM_CONF": self.conf}

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _write_conf(self, user: str) -> None:
        ctld_port, d_port = _free_ports(2)
        d = self.dir
        lines = [
            "ClusterName=gpt2jaxtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={d}/munge.socket",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log",
            f"SlurmdLogFile={d}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            f"KillWait={KILL_WAIT_S}",
            "MinJobAge=600",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _start(self, name: str, cmd: list[str]) -> None:
        out = open(self._path(f"{name}.out"), "wb")
        self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))
        out.close()

    def start(self) -> "OneNodeCluster":
        for sub in ("state", "spool"):
            os.makedirs(self._path(sub), exist_ok=True)
        key = self._path("munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self._write_conf(getpass.getuser())
        self._start("munged", [_which("munged"), "--foreground", "--force", f"--key-file={key}",
                               f"--socket={self._path('munge.socket')}", f"--pid-file={self._path('munged.pid')}",
                               f"--seed-file={self._path('munged.seed')}", f"--log-file={self._path('munged.log')}"])
        self._wait(lambda: os.path.exists(self._path("munge.socket")), "munged", "munged.out")
        self._start("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", self.conf])
        self._start("slurmd", [_which("slurmd"), "-D", "-f", self.conf, "-N", "localhost"])
        self._wait(self._node_idle, "slurmctld/slurmd", "slurmctld.log")
        return self

    def _node_idle(self) -> bool:
        r = subprocess.run(["sinfo", "--noheader", "--format=%t"], env=self.env, capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() == "idle"

    def _wait(self, ok, what: str, log: str, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ok():
                return
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.25)
        self.stop()
        raise ClusterError(f"{what} did not come up within {timeout:.0f} s; {log}:\n{_tail(self._path(log))}")

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def wait_idle(self, timeout: float = 240.0) -> None:
        """Until no job is queued or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.run("squeue", "--noheader").stdout.strip():
                return
            time.sleep(0.5)
        raise ClusterError(f"jobs still queued after {timeout:.0f} s:\n{self.run('squeue').stdout}")

    def stop(self) -> None:
        """Cancel what is left, then stop every daemon this object started, by pid (slurmd, slurmctld,
        munged), SIGTERM first and SIGKILL after 10 s."""
        if any(p.poll() is None for p in self.procs):
            subprocess.run(["scancel", "--full", "--user", getpass.getuser()], env=self.env, capture_output=True)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []

    def __enter__(self) -> "OneNodeCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
