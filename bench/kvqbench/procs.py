"""Starting and stopping the processes of a run, the pid file run.sh's trap reads, free ports,
and the CPU time and memory of processes (from /proc)."""

import os
import signal
import socket
import subprocess
import time


class Procs:
    """Every process the suite starts; their pids are mirrored to $BENCH_PIDFILE for run.sh's trap."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.live = {}  # pid -> (name, Popen)
        self.pidfile = os.environ.get("BENCH_PIDFILE")

    def _sync(self):
        if self.pidfile:
            with open(self.pidfile, "w") as f:
                for pid in self.live:
                    f.write(f"{pid}\n")

    def track(self, name, p):
        """Adds a process started elsewhere (wrk in the background) to the pid file."""
        self.live[p.pid] = (name, p)
        self._sync()

    def forget(self, p):
        """Drops a process that has exited (or was waited for) from the pid file."""
        self.live.pop(p.pid, None)
        self._sync()

    def start(self, name, argv, env=None, cwd=None):
        logf = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        try:
            p = subprocess.Popen(argv, env=full_env, cwd=cwd or self.workdir, stdout=logf, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            logf.close()
        self.track(name, p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=10.0):
        if p is None or p.pid not in self.live:
            return
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.forget(p)

    def stop_all(self):
        # newest first: kvq before the Redis it talks to, so its logs stay free of teardown noise
        for _pid, (_name, p) in reversed(list(self.live.items())):
            self.stop(p, timeout=5)

    def dead(self):
        """'name (pid N) exited with C' for every started process that has exited on its own."""
        return [f"{name} (pid {pid}) exited with {p.returncode}"
                for pid, (name, p) in self.live.items() if p.poll() is not None]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_proc_status(text):
    """VmRSS and VmHWM in MiB from the text of /proc/PID/status."""
    out = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            out[k] = round(int(v.split()[0]) / 1024, 2)
    return out


def proc_mem(pid):
    """VmRSS and VmHWM in MiB of a live process ({} when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return parse_proc_status(f.read())
    except OSError:
        return {}


def proc_cpu(pid):
    """utime + stime of a live process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuWatch:
    """How much CPU processes the suite did not start used during a phase (a disturbed run)."""

    def __init__(self, procs):
        self.procs = procs
        self.t0 = time.monotonic()
        self.busy0 = self.busy()
        self.ours0 = self.ours()

    @staticmethod
    def busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal
        return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")

    def ours(self):
        t = os.times()
        return (t.user + t.system + t.children_user + t.children_system +
                sum(proc_cpu(pid) for pid in list(self.procs.live)))

    def result(self):
        secs = time.monotonic() - self.t0
        if secs <= 0:
            return {}
        busy, ours = self.busy() - self.busy0, self.ours() - self.ours0
        return {"machine_cores_busy": round(busy / secs, 2), "suite_cores_busy": round(ours / secs, 2),
                "foreign_cores_busy": round(max(0.0, busy - ours) / secs, 2)}
