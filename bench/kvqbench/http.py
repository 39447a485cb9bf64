"""The HTTP side: a keep-alive client for polling, /metrics parsing, readiness waits."""

import http.client
import socket
import time
import urllib.parse


def parse_metrics(text):
    """Parses Prometheus text into {'name{labels}': value}; comments and unparsable values are skipped."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def queue_depth_of(metrics):
    """kvq_queue_depth from parsed metrics; -1 when the server does not export it."""
    return int(metrics.get("kvq_queue_depth", -1))


class Http:
    """A keep-alive HTTP/1.1 client for polling (metrics, readiness)."""

    def __init__(self, base, timeout=3.0):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def metrics(self):
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def queue_depth(self):
        return queue_depth_of(self.metrics())

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


def wait_ready(url, timeout):
    """Polls /readyz until 200; returns seconds waited or raises."""
    h = Http(url, timeout=1.0)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            try:
                if h.request("GET", "/readyz")[0] == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.05)
    finally:
        h.close()
    raise RuntimeError(f"{url}/readyz not 200 within {timeout}s")


def first_ready_ms(port, started, timeout=10.0):
    """Tight poll of /readyz on a raw socket; ms from `started` (perf_counter) to the first 200."""
    req = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    deadline = started + timeout
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(req)
                head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200"):
                    return (time.perf_counter() - started) * 1000
        except OSError:
            pass
        time.sleep(0.0005)
    return None
