"""The computations behind the figures: slopes, sustained steps, pacing, apply rates, rows."""

import unittest

from kvqbench.figures import (apply_rate, balance, calibrated_latency_ms, cpu_us_per_write, drain_time, figure_row,
                              format_value, median_or_none, next_rate, pacing_delay_ms, search_done, slope, step_verdict)


def line(a, b, ts):
    return [(t, a + b * t) for t in ts]


class Slope(unittest.TestCase):
    def test_exact_line(self):
        self.assertAlmostEqual(slope(line(100, 250, [0, 1, 2, 3, 4])), 250.0)
        self.assertAlmostEqual(slope(line(900, -40, [0.5, 1.5, 2.5])), -40.0)

    def test_least_squares_of_noisy_points(self):
        # sum((x - 1.5) * (y - 3.25)) / sum((x - 1.5) ** 2) = 9.5 / 5
        self.assertAlmostEqual(slope([(0, 0), (1, 3), (2, 4), (3, 6)]), 1.9)

    def test_too_few_or_one_instant(self):
        self.assertIsNone(slope([(0, 1), (1, 2)]))
        self.assertIsNone(slope([(1, 1), (1, 2), (1, 3)]))


class StepVerdict(unittest.TestCase):
    STEP = 30

    def samples(self, depth_at):
        return [(t, depth_at(t)) for t in range(self.STEP + 1)]

    def test_flat_depth_is_sustained(self):
        sl, end, ok = step_verdict(self.samples(lambda t: 40), self.STEP, 10000)
        self.assertAlmostEqual(sl, 0.0)
        self.assertEqual(end, 40)
        self.assertTrue(ok)

    def test_growing_depth_is_not(self):
        # 10k/s accepted, depth grows 500/s (5 %): more than the allowed 2 %
        sl, end, ok = step_verdict(self.samples(lambda t: 500 * t), self.STEP, 10000)
        self.assertAlmostEqual(sl, 500.0)
        self.assertEqual(end, 15000)
        self.assertFalse(ok)

    def test_ramp_is_ignored(self):
        # a backlog that builds in the first 20 % and then stays: sustained
        sl, _, ok = step_verdict(self.samples(lambda t: min(t, 5) * 1000), self.STEP, 10000)
        self.assertAlmostEqual(sl, 0.0)
        self.assertTrue(ok)

    def test_slow_growth_within_2_percent(self):
        _, _, ok = step_verdict(self.samples(lambda t: 150 * t), self.STEP, 10000)  # 1.5 %, end 4500 < 20000
        self.assertTrue(ok)

    def test_flat_but_deep_backlog_fails(self):
        _, end, ok = step_verdict(self.samples(lambda t: 25000), self.STEP, 10000)  # > 2 s of writes
        self.assertEqual(end, 25000)
        self.assertFalse(ok)

    def test_floors_for_slow_rates(self):
        _, _, ok = step_verdict(self.samples(lambda t: 15 * t), self.STEP, 100)  # 15/s <= 20/s floor, end 450 <= 500
        self.assertTrue(ok)

    def test_no_samples_in_the_last_third(self):
        sl, end, ok = step_verdict([(7, 0), (8, 0), (9, 0)], self.STEP, 10000)
        self.assertIsNone(end)
        self.assertFalse(ok)


class Pacing(unittest.TestCase):
    def test_delay_and_calibration_invert_each_other(self):
        delay = pacing_delay_ms(8000, 0.5, 32)  # 32 conns at 8000/s: 4 ms per request
        self.assertAlmostEqual(delay, 3.5)
        self.assertAlmostEqual(calibrated_latency_ms(8000, delay, 32), 0.5)

    def test_no_negative_delay(self):
        self.assertEqual(pacing_delay_ms(100000, 1.0, 32), 0.0)
        self.assertEqual(calibrated_latency_ms(1e9, 0.0, 32), 0.05)

    def test_search(self):
        self.assertAlmostEqual(next_rate(1000.0, None), 1300.0)
        self.assertAlmostEqual(next_rate(None, 1000.0), 700.0)
        self.assertAlmostEqual(next_rate(1000.0, 2000.0), 1500.0)
        self.assertTrue(search_done(1000.0, 1080.0))
        self.assertFalse(search_done(1000.0, 1090.0))
        self.assertFalse(search_done(None, 1000.0))
        self.assertFalse(search_done(1000.0, None))


class ApplyRate(unittest.TestCase):
    def test_rate_between_90_and_10_percent(self):
        # backlog 10000; start-up until t=1, then 2000/s, then a slow tail
        samples = [(0.0, 10000), (0.5, 10000), (1.0, 10000), (1.5, 9000), (2.0, 8000), (3.0, 6000),
                   (4.0, 4000), (5.0, 2000), (5.5, 1000), (7.0, 300), (9.0, 0)]
        self.assertAlmostEqual(apply_rate(samples, 10000), (9000 - 1000) / (5.5 - 1.5))
        self.assertEqual(drain_time(samples), 9.0)

    def test_drained_before_sampling(self):
        self.assertIsNone(apply_rate([(0.15, 0)], 2000))
        self.assertEqual(drain_time([(0.15, 0)]), 0.15)

    def test_not_drained(self):
        samples = [(0, 1000), (1, 950), (2, 900)]
        self.assertIsNone(apply_rate(samples, 1000))
        self.assertIsNone(drain_time(samples))
        self.assertIsNone(drain_time([]))


class Rows(unittest.TestCase):
    REFS = {"SET": {"rps": 100000.0}, "GET": {"rps": 120000.0}}

    def test_ratio_and_target(self):
        r = figure_row("writes_c32_rps", "writes", 25000.0, "req/s", 25000, ">=", "SET", self.REFS)
        self.assertEqual(r["ratio_to_redis_benchmark"], 0.25)
        self.assertEqual(r["target"], ">= 25000")
        self.assertTrue(r["met"])
        r = figure_row("reads_c32_p99", "p99", 5.5, "ms", 5, "<=", None, self.REFS)
        self.assertFalse(r["met"])
        self.assertIsNone(r["ratio_to_redis_benchmark"])

    def test_ratio_targets_compare_the_ratio_not_the_value(self):
        r = figure_row("writes_c32_rps", "writes", 24000.0, "req/s", ref="SET", refs=self.REFS, ratio_target=0.25)
        self.assertEqual(r["target"], ">= 0.25 x SET")
        self.assertFalse(r["met"])
        r = figure_row("writes_c32_rps", "writes", 26000.0, "req/s", ref="SET", refs=self.REFS, ratio_target=0.25)
        self.assertTrue(r["met"])
        # without a reference run (--url) there is no verdict
        r = figure_row("writes_c32_rps", "writes", 26000.0, "req/s", ref="SET", refs=None, ratio_target=0.25)
        self.assertIsNone(r["met"])

    def test_no_ratio_for_the_reference_itself_or_without_one(self):
        self.assertIsNone(figure_row("redis_set", "SET", 100000.0, "req/s", ref="SET", refs=self.REFS)["ratio_to_redis_benchmark"])
        self.assertIsNone(figure_row("writes_c1_rps", "w", 5.0, "req/s", ref="SET", refs=None)["ratio_to_redis_benchmark"])

    def test_missing_value(self):
        r = figure_row("sustained_rps", "s", None, "req/s", 10000, ">=", "SET", self.REFS)
        self.assertIsNone(r["met"])
        self.assertIsNone(r["ratio_to_redis_benchmark"])
        self.assertEqual(r["target"], ">= 10000")

    def test_format(self):
        self.assertEqual(format_value(None), "n/a")
        self.assertEqual(format_value(16796.4), "16,796")
        self.assertEqual(format_value(100), "100")
        self.assertEqual(format_value(3.91), "3.91")
        self.assertEqual(format_value(0.01834), "0.0183")

    def test_median(self):
        self.assertEqual(median_or_none([5.0, 1.0, 3.0]), 3.0)
        self.assertIsNone(median_or_none([]))


if __name__ == "__main__":
    unittest.main()


class Cluster(unittest.TestCase):
    def test_balance_is_least_over_most(self):
        self.assertEqual(balance([300, 600, 450]), 0.5)
        self.assertEqual(balance(iter([7, 7, 7])), 1.0)
        self.assertEqual(balance([0, 10, 5]), 0.0)

    def test_balance_needs_two_masters_with_something(self):
        self.assertIsNone(balance([5]))
        self.assertIsNone(balance([0, 0, 0]))

    def test_cpu_per_write_in_microseconds(self):
        self.assertAlmostEqual(cpu_us_per_write(0.5, 10000), 50.0)
        self.assertIsNone(cpu_us_per_write(0.5, 0))
