"""The pure computations behind the figures: no processes, no I/O (unit-tested in bench/tests/)."""

import statistics


def format_value(v):
    """How the log and the table print a figure: thousands separators from 100 up, else 3 digits."""
    return "n/a" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")


def figure_row(key, label, value, unit, target=None, cmp=None, ref=None, refs=None, ratio_target=None):
    """One table row; `target` a number, `cmp` '>=' or '<=', `ref` 'SET'/'GET' for the ratio to the
    redis-benchmark figures `refs` ({'SET': {'rps': ...}, 'GET': ...}, None when not measured);
    `ratio_target`: the target is that ratio at least (machines differ, ratios in one run do not)."""
    ratio = None
    if ref and refs and value is not None and not key.startswith("redis_"):
        ratio = value / refs[ref]["rps"]
    met = None
    if ratio_target is not None:
        met = ratio >= ratio_target if ratio is not None else None
        target_text = f">= {ratio_target:g} x {ref}"
    else:
        if target is not None and value is not None:
            met = value >= target if cmp == ">=" else value <= target
        target_text = f"{cmp} {target:g}" if target is not None else None
    return {"key": key, "figure": label, "value": value, "unit": unit,
            "target": target_text,
            "met": met, "ratio_to_redis_benchmark": round(ratio, 4) if ratio is not None else None}


def median_or_none(values):
    return statistics.median(values) if values else None


def slope(samples):
    """Least-squares slope of (t, depth) samples, per second; None for fewer than 3 or one instant."""
    if len(samples) < 3:
        return None
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def step_verdict(samples, step_s, accepted):
    """(slope, end depth, sustained) of one paced step of `step_s` seconds that accepted `accepted`/s.

    The first 20 % of the step (the ramp) is ignored. Sustained: the depth grows by at most 2 % of
    the accepted rate per second (apply >= 98 % of accept) and its maximum in the last third of the
    step stays below two seconds' worth of writes (with floors of 20/s and 500 for slow rates)."""
    tail = [s for s in samples if s[0] >= step_s * 0.2]
    sl = slope(tail)
    last_third = [s[1] for s in tail if s[0] >= step_s * 2 / 3]
    end_depth = max(last_third) if last_third else None
    ok = (sl is not None and end_depth is not None and
          sl <= max(0.02 * accepted, 20) and end_depth <= max(2.0 * accepted, 500))
    return sl, end_depth, ok


def pacing_delay_ms(target_rate, lat_ms, conns):
    """The pause per connection between an answer and its next request for `target_rate` writes/s,
    given a per-request latency of `lat_ms`: rate = conns / (delay + latency)."""
    return max(0.0, conns * 1000.0 / target_rate - lat_ms)


def calibrated_latency_ms(accepted, delay_ms, conns):
    """The per-request latency a step implies (from its accepted rate and its delay)."""
    return max(0.05, conns * 1000.0 / accepted - delay_ms)


def search_done(lo, hi):
    """The sustained-rate search stops when the passing and failing rates are within 8 %."""
    return bool(lo and hi and hi <= lo * 1.08)


def next_rate(lo, hi):
    """Next offered rate: up 30 % while steps pass, down 30 % while they fail, else bisect."""
    if hi is None:
        return lo * 1.3
    if lo is None:
        return hi * 0.7
    return (lo + hi) / 2


def apply_rate(samples, backlog):
    """Rate at which (t, depth) samples went from 90 % to 10 % of `backlog` (excludes the workers'
    start-up and the tail); None when no two samples span that range."""
    a = next((s for s in samples if s[1] <= 0.9 * backlog), None)
    b = next((s for s in samples if s[1] <= 0.1 * backlog), None)
    return (a[1] - b[1]) / (b[0] - a[0]) if a and b and b[0] > a[0] else None


def drain_time(samples):
    """Seconds until the depth reached 0 (the last sample's time), None when it never did."""
    return samples[-1][0] if samples and samples[-1][1] == 0 else None


def balance(counts):
    """min/max of per-master counts (1: perfectly even); None when there is nothing to compare."""
    counts = list(counts)
    if len(counts) < 2 or max(counts) <= 0:
        return None
    return min(counts) / max(counts)


def cpu_us_per_write(cpu_s, writes):
    """Microseconds of Redis CPU per applied write; None without writes."""
    return cpu_s / writes * 1e6 if writes else None
