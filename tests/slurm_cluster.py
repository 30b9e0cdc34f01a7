"""A real one-node Slurm cluster on localhost for the tests: munge, MariaDB + slurmdbd (NeMo-Run reads job
states with ``sacct``, which needs accounting), slurmctld and slurmd, state and spool under a temp dir.

Debian's packages (``slurmctld slurmd slurm-client slurmdbd munge mariadb-server``) must be installed
and the tests must run as root; ``.ci/run`` installs them. Nothing here imitates the scheduler."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "munged", "mariadbd")


def missing() -> list[str]:
    return [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _run(cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env)
    if check and proc.returncode:
        raise RuntimeError(f"`{cmd}` failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def _wait(what: str, ok, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ok():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


class SlurmCluster:
    def __init__(self, root: Path, cpus: int | None = None, memory_mb: int | None = None):
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb or int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        self.conf = self.root / "slurm.conf"
        self.name = f"mlsl{os.getpid()}"  # its own accounting: job ids restart with every new cluster
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _configs(self) -> None:
        r = self.root
        for d in ("ctld", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""ClusterName={self.name}
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
StateSaveLocation={r}/ctld
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/ctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=localhost CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        dbd = r / "slurmdbd.conf"
        dbd.write_text(f"""AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=mlsl_slurm
StoragePass=mlsl
StorageLoc=mlsl_slurm_acct
PidFile={r}/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
""")
        dbd.chmod(0o600)

    def _munge(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
        _run("mkdir -p /run/munge /var/lib/munge /var/log/munge && chown -R munge:munge /etc/munge /run/munge /var/lib/munge "
             "/var/log/munge && chmod 400 /etc/munge/munge.key", check=False)
        if _run("pgrep -x munged", check=False).returncode:
            _run("su -s /bin/sh munge -c /usr/sbin/munged || /usr/sbin/munged --force")
        _wait("munge", lambda: _run("munge -n | unmunge", check=False).returncode == 0)

    def _database(self) -> None:
        sock = "/run/mysqld/mysqld.sock"
        if _run("mysql -e 'select 1'", check=False).returncode:
            _run("mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld")
            subprocess.Popen([_bin("mariadbd"), "--user=mysql", "--datadir=/var/lib/mysql", f"--socket={sock}"],
                             stdout=open(self.root / "log" / "mariadb.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
            _wait("MariaDB", lambda: _run("mysql -e 'select 1'", check=False).returncode == 0)
        _run("mysql -e \"CREATE USER IF NOT EXISTS 'mlsl_slurm'@'localhost' IDENTIFIED BY 'mlsl'; "
             "GRANT ALL ON mlsl_slurm_acct.* TO 'mlsl_slurm'@'localhost'; FLUSH PRIVILEGES;\"")

    def start(self) -> "SlurmCluster":
        self._configs()
        self._munge()
        self._database()
        _run(f"{_bin('slurmdbd')}", env=self.env)
        _wait("slurmdbd", lambda: _run("sacctmgr -n list cluster", check=False, env=self.env).returncode == 0)
        _run(f"sacctmgr -i add cluster {self.name}", check=False, env=self.env)
        _run(f"{_bin('slurmctld')} -f {self.conf}", env=self.env)
        _run(f"{_bin('slurmd')} -f {self.conf}", env=self.env)
        _wait("an idle node", lambda: "idle" in _run("sinfo -h -o %t", check=False, env=self.env).stdout)
        return self

    def stop(self) -> None:
        _run("scancel --user=root", check=False, env=self.env)
        for pidfile in ("slurmd.pid", "ctld.pid", "slurmdbd.pid"):
            p = self.root / pidfile
            if p.exists():
                _run(f"kill {p.read_text().strip()}", check=False)
        time.sleep(1)

    def jobs(self) -> list[dict[str, str]]:
        """Every job of this cluster from accounting: id, name, state, start, end."""
        out = _run("sacct -a -X -n --parsable2 -S 1970-01-01 -o JobID,JobName%60,State,Start,End", env=self.env).stdout
        rows = [l.split("|") for l in out.splitlines() if l.strip()]
        return [dict(zip(("id", "name", "state", "start", "end"), r)) for r in rows]

    def squeue(self) -> list[dict[str, str]]:
        out = _run("squeue -h -o '%i|%j|%T'", env=self.env).stdout
        return [dict(zip(("id", "name", "state"), l.split("|"))) for l in out.splitlines() if l.strip()]

    def cancel(self, job_id: str) -> None:
        _run(f"scancel {job_id}", env=self.env)
