"""Parsing wrk's output (the BENCH_JSON line bench/wrk/common.lua prints)."""

import os
import re
import unittest

from kvqbench import WRK_DIR
from kvqbench.wrk import WRK_FIELDS, parse_wrk, read_stamps

# what wrk prints with common.lua as its done() hook: its own summary, then the JSON line
SAMPLE = """Running 3s test @ http://127.0.0.1:40001
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.90ms    0.52ms  12.10ms   90.00%
  50000 requests in 2.50s, 5.00MB read
  Non-2xx or 3xx responses: 10
Requests/sec:  20000.00
BENCH_JSON {"requests":50000,"duration_us":2500000,"bytes":5000000,"err_connect":1,"err_read":2,"err_write":3,"err_status":10,"err_timeout":4,"mean_us":1900.4,"p50_us":1800,"p90_us":2400,"p99_us":3900,"p999_us":8123,"max_us":12100}
"""


class ParseWrk(unittest.TestCase):
    def test_figures_and_derived_rates(self):
        d = parse_wrk(SAMPLE)
        self.assertEqual(d["requests"], 50000)
        self.assertEqual(d["ok"], 49990)
        self.assertAlmostEqual(d["rps"], 20000.0)
        self.assertAlmostEqual(d["ok_rps"], 19996.0)
        self.assertEqual(d["socket_errors"], 1 + 2 + 3 + 4)
        self.assertEqual(d["err_status"], 10)

    def test_latencies_in_ms(self):
        d = parse_wrk(SAMPLE)
        self.assertEqual(d["p50_ms"], 1.8)
        self.assertEqual(d["p90_ms"], 2.4)
        self.assertEqual(d["p99_ms"], 3.9)
        self.assertEqual(d["p999_ms"], 8.123)
        self.assertEqual(d["max_ms"], 12.1)
        self.assertEqual(d["mean_ms"], 1.9)  # 1900.4 us, rounded to 3 decimals of a ms

    def test_zero_duration_gives_zero_rates(self):
        d = parse_wrk(SAMPLE.replace('"duration_us":2500000', '"duration_us":0'))
        self.assertEqual(d["rps"], 0.0)
        self.assertEqual(d["ok_rps"], 0.0)

    def test_no_json_line_is_an_error_naming_the_output(self):
        with self.assertRaisesRegex(RuntimeError, "wrk printed no figures(.|\n)*unable to connect"):
            parse_wrk("", "unable to connect to 127.0.0.1:1 Connection refused")

    def test_json_line_must_start_a_line(self):
        with self.assertRaises(RuntimeError):
            parse_wrk("x BENCH_JSON {\"requests\":1}\n")

    def test_missing_field_is_an_error(self):
        with self.assertRaisesRegex(RuntimeError, "p999_us"):
            parse_wrk(SAMPLE.replace('"p999_us":8123,', ""))

    def test_common_lua_prints_every_field_parse_wrk_needs(self):
        with open(os.path.join(WRK_DIR, "common.lua")) as f:
            lua = f.read()
        printed = set(re.findall(r'\\?"(\w+)\\?":%', lua))
        self.assertEqual(printed, set(WRK_FIELDS))


class Stamps(unittest.TestCase):
    def test_read_stamps(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            for tid, t in ((0, "1700000000.250000 5000"), (1, "1700000001.500000 5000")):
                with open(os.path.join(d, f"thread-{tid}"), "w") as f:
                    f.write(t + "\n")
            self.assertEqual(max(read_stamps(d)), 1700000001.5)
            self.assertEqual(len(read_stamps(d)), 2)


class ScriptsExist(unittest.TestCase):
    def test_the_scripts_the_phases_name_are_in_bench_wrk(self):
        for script in ("write.lua", "read.lua", "common.lua", "stamp.lua"):
            self.assertTrue(os.path.isfile(os.path.join(WRK_DIR, script)), script)


if __name__ == "__main__":
    unittest.main()
