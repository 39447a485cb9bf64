"""Redis helpers: redis-cli, starting redis-server and a sentinel set, redis-benchmark."""

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
