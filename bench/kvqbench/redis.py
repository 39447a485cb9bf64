"""Redis helpers: redis-cli, starting redis-server, a sentinel set and a Redis Cluster,
redis-benchmark, and the figures of INFO (CPU, command calls) and key counts."""

import os
import subprocess
import time


def redis_cli(port, *args, timeout=5, tls_ca=None):
    tls = ["--tls", "--cacert", tls_ca] if tls_ca else []
    r = subprocess.run(["redis-cli", *tls, "-h", "127.0.0.1", "-p", str(port), *args],
                       capture_output=True, text=True, timeout=timeout)
    return r.stdout


def wait_redis(port, timeout=10, tls_ca=None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if redis_cli(port, "PING", tls_ca=tls_ca).strip() == "PONG":
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis on port {port} did not answer within {timeout}s")


def start_redis(procs, name, port, datadir, aof, extra=()):
    os.makedirs(datadir, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", datadir, "--save", "",
            "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec", "--daemonize", "no",
            "--logfile", ""] + list(extra)
    p = procs.start(name, argv)
    wait_redis(port)
    return p


def make_certs(base):
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl, EC P-256), made for the run;
    returns (ca, cert, key) paths."""
    os.makedirs(base, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=base, check=True, capture_output=True, timeout=60)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    openssl("req", "-x509", "-new", "-nodes", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=kvq bench CA")
    openssl("req", "-new", "-nodes", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(base, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    return tuple(os.path.join(base, f) for f in ("ca.crt", "server.crt", "server.key"))


def start_tls_redis(procs, name, port, datadir, certs):
    """redis-server with TLS only (`port 0`, `tls-port`), AOF off like the plaintext reference."""
    ca, cert, key = certs
    os.makedirs(datadir, exist_ok=True)
    argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key,
            "--tls-ca-cert-file", ca, "--tls-auth-clients", "no", "--bind", "127.0.0.1", "--dir", datadir,
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
    p = procs.start(name, argv)
    wait_redis(port, tls_ca=ca)
    return p


def start_sentinel_set(procs, base, ports, sports, timeout=30):
    """A master on ports[0], replicas on the other ports (AOF everysec) and one redis-sentinel per
    port in `sports` monitoring it as "mymaster"; returns when both replicas are online and every
    sentinel names the master, or raises after `timeout` s."""
    start_redis(procs, "sent-master", ports[0], os.path.join(base, "m"), aof=True)
    for i in range(1, len(ports)):
        start_redis(procs, f"sent-replica{i}", ports[i], os.path.join(base, f"r{i}"), aof=True,
                    extra=["--replicaof", "127.0.0.1", str(ports[0])])
    for i, sp in enumerate(sports):
        conf = os.path.join(base, f"sentinel{i}.conf")
        with open(conf, "w") as f:
            f.write(f"port {sp}\nbind 127.0.0.1\ndaemonize no\ndir {base}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {ports[0]} 2\n"
                    "sentinel down-after-milliseconds mymaster 5000\nsentinel failover-timeout mymaster 60000\n")
        procs.start(f"sentinel{i}", ["redis-sentinel", conf])
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        online = redis_cli(ports[0], "INFO", "replication").count("state=online")
        known = all(redis_cli(sp, "SENTINEL", "get-master-addr-by-name", "mymaster").split()[1:2] == [str(ports[0])]
                    for sp in sports)
        if online == len(ports) - 1 and known:
            return
        time.sleep(0.2)
    raise RuntimeError(f"sentinel setup did not converge within {timeout} s")


def start_cluster(procs, base, ports, bus_ports, timeout=30):
    """A Redis Cluster of masters only, one per port in `ports` (cluster bus on `bus_ports`; AOF off
    like phases 1-5), created with `redis-cli --cluster create`; returns when every node says
    `cluster_state:ok` and knows every other, or raises after `timeout` s."""
    for i, (port, bus) in enumerate(zip(ports, bus_ports)):
        start_redis(procs, f"cluster{i}", port, os.path.join(base, f"n{i}"), aof=False,
                    extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                           "--cluster-port", str(bus), "--cluster-node-timeout", "5000"])
    r = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed:\n{r.stdout}\n{r.stderr}")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        infos = [info_fields(redis_cli(p, "CLUSTER", "INFO")) for p in ports]
        if all(i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(len(ports)) for i in infos):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout} s")


def info_fields(text):
    """{'name': 'value'} of an INFO or CLUSTER INFO answer (section headers and blanks left out)."""
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def cpu_seconds(info):
    """Redis's own CPU time (main and I/O threads, user + system) from INFO cpu fields."""
    return float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))


def command_calls(info, command):
    """How often `command` ran (from scripts too) from INFO commandstats fields; 0 when never."""
    stat = info.get(f"cmdstat_{command}", "")
    for part in stat.split(","):
        if part.startswith("calls="):
            return int(part[len("calls="):])
    return 0


def command_stats(info):
    """{command: (calls, usec)} of every command in INFO commandstats fields."""
    out = {}
    for k, v in info.items():
        if k.startswith("cmdstat_"):
            parts = dict(p.split("=", 1) for p in v.split(",") if "=" in p)
            out[k[len("cmdstat_"):]] = (int(parts.get("calls", 0)), int(parts.get("usec", 0)))
    return out


def redis_counters(port):
    """The counters a cluster-phase segment takes differences of: CPU seconds, XADD calls and
    every command's calls and time (where a Redis spends its CPU)."""
    info = info_fields(redis_cli(port, "INFO", "cpu") + redis_cli(port, "INFO", "commandstats"))
    return {"cpu_s": cpu_seconds(info), "xadd": command_calls(info, "xadd"), "commands": command_stats(info)}


def top_commands(before, after, n=8):
    """The `n` commands that took the most time between two `command_stats`: {name: [calls, usec]}."""
    delta = {c: [calls - before.get(c, (0, 0))[0], usec - before.get(c, (0, 0))[1]]
             for c, (calls, usec) in after.items()}
    return dict(sorted(((c, d) for c, d in delta.items() if d[0] > 0), key=lambda x: -x[1][1])[:n])


def count_keys(port, pattern, timeout=120):
    """Keys matching `pattern` on one server (`redis-cli --scan`: SCAN, never KEYS)."""
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--scan", "--pattern", pattern],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"redis-cli --scan on port {port} failed: {r.stderr.strip()}")
    return sum(1 for line in r.stdout.splitlines() if line)


def parse_redis_benchmark(csv_text):
    """{'SET': {'rps', 'p50_ms', 'p99_ms'}, 'GET': {...}} from `redis-benchmark -q --csv` output."""
    out = {}
    for line in csv_text.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if cols and cols[0] in ("SET", "GET"):
            out[cols[0]] = {"rps": float(cols[1]), "p50_ms": float(cols[4]), "p99_ms": float(cols[6])}
    return out


def redis_benchmark(port, n):
    """The in-run ceiling: redis-benchmark -c 32 -t set,get, with its default 3-byte values (the
    reference every throughput figure is divided by; see bench/README.md, "Reading the table")."""
    r = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "32", "-n", str(n),
                        "-t", "set,get", "-q", "--csv"], capture_output=True, text=True, timeout=300)
    out = parse_redis_benchmark(r.stdout)
    if "SET" not in out or "GET" not in out:
        raise RuntimeError(f"could not parse redis-benchmark output:\n{r.stdout}\n{r.stderr}")
    return out
