"""Parsing /metrics, redis-benchmark's CSV and /proc/PID/status."""

import unittest

from kvqbench.http import parse_metrics, queue_depth_of
from kvqbench.procs import parse_proc_status
from kvqbench.redis import command_calls, command_stats, cpu_seconds, info_fields, parse_redis_benchmark, top_commands

METRICS = """# HELP kvq_queue_depth Tasks accepted and not yet applied.
# TYPE kvq_queue_depth gauge
kvq_queue_depth 1234
# TYPE kvq_http_requests_total counter
kvq_http_requests_total{method="PUT",route="/v1/keys/{key}",status="202"} 5.5e3
kvq_http_requests_total{method="GET",route="/v1/keys/{key}",status="404"} 0
kvq_build_info{version="0.1.0"} 1
kvq_weird NaN-ish
"""

# `redis-benchmark -c 32 -n 2000 -t set,get -q --csv` (redis 7.0)
RB_CSV = '''"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","54054.05","0.400","0.032","0.359","0.527","3.135","3.359"
"GET","51282.05","0.394","0.128","0.351","0.511","2.879","3.063"
'''

STATUS = """Name:\tkvq-server
VmPeak:\t  100000 kB
VmHWM:\t   11468 kB
VmRSS:\t    7884 kB
Threads:\t3
"""


class Metrics(unittest.TestCase):
    def test_values_by_name_and_labels(self):
        m = parse_metrics(METRICS)
        self.assertEqual(m["kvq_queue_depth"], 1234.0)
        self.assertEqual(m['kvq_http_requests_total{method="PUT",route="/v1/keys/{key}",status="202"}'], 5500.0)
        self.assertEqual(m['kvq_http_requests_total{method="GET",route="/v1/keys/{key}",status="404"}'], 0.0)
        self.assertEqual(m['kvq_build_info{version="0.1.0"}'], 1.0)

    def test_comments_and_unparsable_values_are_skipped(self):
        m = parse_metrics(METRICS)
        self.assertFalse(any(k.startswith("#") for k in m))
        self.assertNotIn("kvq_weird", m)
        self.assertEqual(len(m), 4)

    def test_label_values_with_spaces(self):
        m = parse_metrics('x{reason="no such key"} 2\n')
        self.assertEqual(m, {'x{reason="no such key"}': 2.0})

    def test_queue_depth(self):
        self.assertEqual(queue_depth_of(parse_metrics(METRICS)), 1234)
        self.assertEqual(queue_depth_of(parse_metrics("other 1\n")), -1)


# `INFO cpu` + `INFO commandstats` (redis 7.0), abridged
INFO = """# CPU\r
used_cpu_sys:1.250000\r
used_cpu_user:2.500000\r
used_cpu_sys_children:9.000000\r
\r
# Commandstats\r
cmdstat_xadd:calls=1200,usec=9000,usec_per_call=7.50,rejected_calls=0,failed_calls=0\r
cmdstat_evalsha:calls=300,usec=90000,usec_per_call=300.00,rejected_calls=0,failed_calls=2\r
"""


class RedisInfo(unittest.TestCase):
    def test_fields_without_headers(self):
        f = info_fields(INFO)
        self.assertEqual(f["used_cpu_user"], "2.500000")
        self.assertFalse(any(k.startswith("#") or not k for k in f))
        self.assertEqual(info_fields("cluster_state:ok\r\ncluster_known_nodes:3\r\n"),
                         {"cluster_state": "ok", "cluster_known_nodes": "3"})

    def test_cpu_is_user_plus_system_of_the_server_only(self):
        self.assertAlmostEqual(cpu_seconds(info_fields(INFO)), 3.75)
        self.assertEqual(cpu_seconds({}), 0.0)

    def test_command_calls(self):
        f = info_fields(INFO)
        self.assertEqual(command_calls(f, "xadd"), 1200)
        self.assertEqual(command_calls(f, "evalsha"), 300)
        self.assertEqual(command_calls(f, "xreadgroup"), 0)

    def test_where_the_time_went(self):
        before = command_stats(info_fields(INFO))
        self.assertEqual(before, {"xadd": (1200, 9000), "evalsha": (300, 90000)})
        after = {"xadd": (1300, 9600), "evalsha": (310, 93000), "ping": (5, 2), "get": (0, 0)}
        self.assertEqual(top_commands(before, after), {"evalsha": [10, 3000], "xadd": [100, 600], "ping": [5, 2]})
        self.assertEqual(top_commands(before, after, n=1), {"evalsha": [10, 3000]})


class RedisBenchmark(unittest.TestCase):
    def test_set_and_get(self):
        out = parse_redis_benchmark(RB_CSV)
        self.assertEqual(out["SET"], {"rps": 54054.05, "p50_ms": 0.359, "p99_ms": 3.135})
        self.assertEqual(out["GET"], {"rps": 51282.05, "p50_ms": 0.351, "p99_ms": 2.879})

    def test_nothing_to_parse(self):
        self.assertEqual(parse_redis_benchmark("Could not connect to Redis at 127.0.0.1:1\n"), {})


class ProcStatus(unittest.TestCase):
    def test_rss_and_hwm_in_mib(self):
        self.assertEqual(parse_proc_status(STATUS), {"VmHWM": 11.2, "VmRSS": 7.7})


if __name__ == "__main__":
    unittest.main()
