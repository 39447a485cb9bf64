"""The table and the checks that make a smoke run fail."""

import unittest

from kvqbench.figures import figure_row
from kvqbench.report import EXPECTED_FIGURES, smoke_problems, table_lines


def results_with(keys, value=1.0, **raw):
    return {"figures": [figure_row(k, k, value, "x") for k in keys], "raw": raw, "memory": {}, "notes": []}


GOOD_E2E_RAW = {"apply_1w": {"backlog": 2000, "drain_s": 0.2}, "apply_4w": {"backlog": 2000, "drain_s": 0.1},
                "sustained_steps": [{"accepted_rps": 2000}], "cluster_sustained_steps": [{"accepted_rps": 1500}]}


class SmokeProblems(unittest.TestCase):
    def all_keys(self, phases):
        return [k for p in phases for k in EXPECTED_FIGURES[p]]

    def test_a_complete_run_passes(self):
        phases = list(EXPECTED_FIGURES)
        self.assertEqual(smoke_problems(results_with(self.all_keys(phases), **GOOD_E2E_RAW), [], phases), [])

    def test_missing_and_na_figures_fail(self):
        phases = ["setup", "writes"]
        keys = self.all_keys(phases)
        r = results_with([k for k in keys if k != "writes_c1_p99"])
        r["figures"][0]["value"] = None  # redis_set
        out = smoke_problems(r, [], phases)
        self.assertEqual(out, ["figure redis_set (setup) is n/a", "figure writes_c1_p99 (writes) was not recorded"])

    def test_phases_not_run_are_not_expected(self):
        self.assertEqual(smoke_problems(results_with(self.all_keys(["setup"])), [], ["setup"]), [])

    def test_error_and_problems_fail(self):
        r = results_with(self.all_keys(["setup"]))
        r["error"] = "RuntimeError: boom"
        out = smoke_problems(r, ["writes_c1: 3 non-2xx answers, 0 socket errors of 10"], ["setup"])
        self.assertEqual(out, ["the run stopped: RuntimeError: boom", "writes_c1: 3 non-2xx answers, 0 socket errors of 10"])

    def test_speed_dependent_figures_may_be_na_but_the_work_must_happen(self):
        r = results_with(self.all_keys(["e2e"]), **GOOD_E2E_RAW)
        for f in r["figures"]:
            if f["key"] in ("sustained_rps", "apply_rate_4w"):
                f["value"] = None
        self.assertEqual(smoke_problems(r, [], ["e2e"]), [])
        r["raw"]["apply_4w"] = {"backlog": 2000, "drain_s": None}
        r["raw"]["sustained_steps"] = [{"accepted_rps": 0}]
        out = smoke_problems(r, [], ["e2e"])
        self.assertEqual(len(out), 2)
        self.assertIn("4 worker(s)", out[0])
        self.assertIn("no step", out[1])

    def test_the_cluster_sustained_rate_may_be_na_but_a_step_must_accept_writes(self):
        r = results_with(self.all_keys(["cluster"]), **GOOD_E2E_RAW)
        next(f for f in r["figures"] if f["key"] == "cluster_sustained_rps")["value"] = None
        self.assertEqual(smoke_problems(r, [], ["cluster"]), [])
        r["raw"]["cluster_sustained_steps"] = []
        self.assertEqual(smoke_problems(r, [], ["cluster"]),
                         ["the cluster's sustained-rate search ran no step that accepted writes"])
        r["raw"]["cluster_sustained_steps"] = [{"accepted_rps": 1}]
        next(f for f in r["figures"] if f["key"] == "cluster_keys_balance")["value"] = None
        self.assertEqual(smoke_problems(r, [], ["cluster"]), ["figure cluster_keys_balance (cluster) is n/a"])

    def test_burst_drain_na_fails(self):
        r = results_with(self.all_keys(["e2e"]), **GOOD_E2E_RAW)
        next(f for f in r["figures"] if f["key"] == "burst_drain_s")["value"] = None
        self.assertEqual(smoke_problems(r, [], ["e2e"]), ["figure burst_drain_s (e2e) is n/a"])


class Table(unittest.TestCase):
    def test_columns(self):
        refs = {"SET": {"rps": 100000.0}}
        r = {"figures": [figure_row("writes_c32_rps", "writes accepted/s c=32", 16796.0, "req/s", 25000, ">=", "SET", refs),
                         figure_row("burst_drain_s", "drain", None, "s")],
             "notes": ["something happened"]}
        lines = table_lines(r)
        self.assertEqual(lines[0].split(), ["figure", "value", "unit", "target", "ratio", "met"])
        self.assertEqual(lines[2].split(), ["writes", "accepted/s", "c=32", "16,796", "req/s", ">=", "25000", "0.168", "NO"])
        self.assertEqual(lines[3].split(), ["drain", "n/a", "s"])
        self.assertEqual(lines[-1], "note: something happened")
        self.assertEqual(len({len(line) for line in lines[:4]}), 1)  # aligned columns


if __name__ == "__main__":
    unittest.main()


class MarkdownTable(unittest.TestCase):
    def test_the_readme_table_renders_from_a_results_file(self):
        import json
        import os
        import subprocess
        import sys
        import tempfile

        from kvqbench.report import markdown_table

        r = results_with(["writes_c32_rps", "reads_c32_rps"], value=16796.4)
        r["figures"][0]["ratio_to_redis_benchmark"] = 0.156
        lines = markdown_table(r, "bench/results/published/run.json")
        self.assertEqual(lines[2], "| writes_c32_rps | 16,796 x | 0.156 |")
        self.assertEqual(lines[3], "| reads_c32_rps | 16,796 x |  |")
        self.assertEqual(lines[-1], "Figures from [bench/results/published/run.json](bench/results/published/run.json).")
        # And from the command line, as the README says.
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(r, fh)
        try:
            bench = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            out = subprocess.run([sys.executable, "-m", "kvqbench.report", "--table", fh.name], cwd=bench,
                                 capture_output=True, text=True, check=True).stdout
            self.assertIn("| writes_c32_rps | 16,796 x | 0.156 |", out)
        finally:
            os.unlink(fh.name)
