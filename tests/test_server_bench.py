"""``routerl bench`` pieces (not a timed test): percentiles, medians, the report, one tiny level
against an in-process server."""

from __future__ import annotations

import pytest

from test_server_service import start

from routerl.bench.service import LevelResult, VariantResult, format_report, measure_level, median_result, percentile


def test_percentile():
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile(range(101), 95) == 95


def result(name, p50, rss):
    return VariantResult(name, "r", {}, {}, health_p50_ms=0.5, list_models_p50_ms=0.6, rss_start_mib=50, rss_peak_mib=rss,
                         levels=[LevelResult(1, 100, 0, 0.1, p50, p50 * 2, p50 * 3, p50)])


def test_median_and_report():
    med = median_result("m", [result("a", 1.0, 60), result("b", 3.0, 70), result("c", 2.0, 65)])
    assert med.level(1).p50_ms == 2.0 and med.rss_peak_mib == 65 and med.repeats == 3
    report = format_report([result("baseline (cache=false)", 2.0, 100), med], "routerl bench --compare cache=false")
    assert "`routerl bench --compare cache=false`" in report and "medians of 3 interleaved runs" in report
    assert "| baseline (cache=false) |" in report and "measured / baseline: c=1: p50 1.00x" in report
    assert "c=1 Route p50 = 4.00x the health-check floor" in report


def test_measure_level_against_a_server(tmp_path):
    srv = start(tmp_path)
    try:
        level = measure_level(f"127.0.0.1:{srv.port}", concurrency=2, requests=10)
    finally:
        srv.stop(0).wait()
        srv.close()
    assert level.errors == 0 and level.requests == 10 and 0 < level.p50_ms <= level.p99_ms and level.rps > 0


def test_variants_bench_compares_serving_settings_of_one_policy():
    from routerl.bench.variants import main, parse_variant, run

    assert parse_variant("dtype=int8, action_scoring=prefix") == {"dtype": "int8", "action_scoring": "prefix"}
    lines = []
    rows = run("tiny", [{"mode": "fast"}, {"mode": "fast", "cache": False}], rounds=1, out=lines.append)
    n = 24 * 3 * 2  # bench queries x knobs, first calls and second rounds
    assert [r["n"] for r in rows] == [n, n] and rows[0]["same"] == n and rows[0]["max_dp"] == 0
    assert rows[1]["same"] == n and rows[1]["max_dp"] < 1e-4  # the uncached path decides alike
    assert any(line.startswith("| mode=fast,cache=False |") for line in lines)
    assert all(r["prefix_tokens"] > 0 and r["request_tokens"] > 0 for r in rows)
    assert main(["--variant", "dtype"]) == 2 and main(["--checkpoint", "tiny", "--variant", "dtype=int4"]) == 2
    # decisions in a worker thread (the server's arrangement) decide alike
    worker = run("tiny", [{"mode": "fast"}], rounds=1, out=lines.append, threading_mode="worker-two-teams")
    assert worker[0]["n"] == n and lines[-1].startswith("| mode=fast |") and "worker thread" in lines[-4]
    with pytest.raises(SystemExit):
        main(["--checkpoint", "tiny", "--thread", "elsewhere"])


def test_variants_are_checked_before_any_runs(monkeypatch, capsys):
    """The default variants suit the shipped policy; a variant it cannot serve (int8 on the fused
    engine) fails before the first variant spends minutes."""
    from routerl.bench import variants as V
    from routerl.policy.router import resolved_policy_config

    for text in V.DEFAULT_VARIANTS:
        resolved_policy_config(None, **V.parse_variant(text))
    monkeypatch.setattr(V, "run", lambda *a, **k: pytest.fail("ran before checking every variant"))
    assert V.main(["--variant", "dtype=float32", "--variant", "dtype=int8,engine=fused"]) == 2
    assert "--variant dtype=int8,engine=fused: field 'engine'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown policy option 'colour'"):
        resolved_policy_config(None, colour="red")


def test_median_of_runs_with_failed_calls_keeps_routes_per_second_and_measured_latencies():
    """Errors are totalled over the runs, but routes/s is each run's own figure (it was
    (requests - total errors) / seconds: -50 routes/s here), and a run where every call failed
    measured no latency (its 0 ms p50 is not a figure)."""
    runs = [VariantResult("r", "r", {}, {}, levels=[LevelResult(1, 100, 50, 1.0, p50, p50, p50, p50)])
            for p50 in (2.0, 4.0, 6.0)]
    runs.append(VariantResult("r", "r", {}, {}, levels=[LevelResult(1, 100, 100, 1.0, 0.0, 0.0, 0.0, 0.0)]))
    lv = median_result("m", runs).level(1)
    assert lv.errors == 250 and lv.rps == 50.0 and lv.p50_ms == 4.0
    assert median_result("m", runs).to_dict()["levels"][0]["rps"] == 50.0
    failed = VariantResult("x", "r", {}, {}, health_p50_ms=0.4, levels=[LevelResult(1, 100, 100, 1.0, 0, 0, 0, 0)])
    report = format_report([failed], "routerl bench")
    assert "| x | r | 0.400 | 0.000 | - | - | - | 0 |" in report and "100 Route calls failed" in report


def test_a_server_that_stops_answering_is_a_clear_error_not_a_grpc_traceback(tmp_path, monkeypatch):
    import subprocess
    import sys

    from routerl.bench import service as S

    class Dead:  # "started", then gone: its port refuses every call
        def __init__(self, workdir, *args, **kwargs):
            self.proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
            self.proc.wait()
            self.target, self.start_seconds, self.rss_start_mib = "127.0.0.1:1", 0.1, None
            self.stderr_path = workdir / "server.log"
            self.stderr_path.write_text("Traceback ...\nMemoryError\n")

        def stop(self):
            pass

    monkeypatch.setattr(S, "ServerUnderTest", Dead)
    with pytest.raises(RuntimeError, match=r"(?s)UNAVAILABLE.*exited with code 3.*MemoryError"):
        S.run_variant("measured", tmp_path, router="r", router_options={}, server_options={}, checkpoint=None,
                      requests=2, concurrencies=[1], warmup=1, floor_calls=1, call_timeout=5.0, log=lambda line: None)


def test_bench_refuses_a_concurrency_level_given_twice(monkeypatch, capsys):
    """``--concurrency 1,1`` measured the level twice and reported the first twice (the second was lost)."""
    from routerl.bench import service as S
    from routerl.cli import main

    monkeypatch.setattr(S, "run_bench", lambda **kwargs: pytest.fail("ran with a duplicate level"))
    assert main(["bench", "--concurrency", "1,8,1"]) == 2
    assert "--concurrency lists a level twice" in capsys.readouterr().err
