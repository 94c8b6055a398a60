"""Latency, throughput and memory of ``routerl serve`` on loopback (``routerl bench``).

For each variant (a baseline when ``compare`` options are given, then the measured one), the
benchmark starts ``python -m routerl serve`` as a subprocess on 127.0.0.1 with an 8-model pool
(the first 8 models of the default catalog), and measures from this process:

* the transport floor: p50 of a trivial RPC (a health check; and ``ListModels``, which goes
  through the whole call wrapper: auth, lane, access log, metrics);
* ``Route()`` latency p50/p95/p99 and routes per second at each concurrency (default 1 and 8;
  one thread and one channel per concurrent client, closed loop);
* the server's resident memory after start-up and its peak (``VmHWM``) after the load.

Queries cycle through a fixed list of 24 prompts of three domains and the three modes, so every
run sends the same requests. Ratios compare the measured variant with the baseline (e.g. a policy
with and without its prefix cache) and each Route p50 with the transport floor of the same run.
The client runs in this process: on a small machine it competes with the server for the CPU,
which the numbers include.
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CATALOG = REPO / "configs" / "catalog" / "default.yaml"
POOL_SIZE = 8
START_TIMEOUT_S = 600.0  # a policy LM may take a while to load

QUERIES: tuple[tuple[str, str], ...] = (
    ("What is 17 * 23?", "math_grade_school"),
    ("A train travels 120 km in 1.5 hours. What is its average speed in km/h?", "math_grade_school"),
    ("Sara has 3 times as many apples as Tom. Together they have 48. How many does Sara have?", "math_grade_school"),
    ("If a shirt costs $25 after a 20% discount, what was the original price?", "math_grade_school"),
    ("A recipe needs 2/3 cup of sugar per batch. How much sugar for 4.5 batches?", "math_grade_school"),
    ("What is the remainder when 2^100 is divided by 7?", "math_competition"),
    ("Find all real x such that x^4 - 5x^2 + 4 = 0.", "math_competition"),
    ("How many positive divisors does 3600 have?", "math_competition"),
    ("Prove that the square root of 2 is irrational.", "math_competition"),
    ("Let f(x) = x^2 + bx + c have roots r and s with r + s = 7 and rs = 10. Find f(1).", "math_competition"),
    ("In triangle ABC, AB = 13, BC = 14, CA = 15. Find the radius of the inscribed circle.", "math_competition"),
    ("How many ways can 8 rooks be placed on a chessboard so that none attack each other?", "math_competition"),
    ("What does this Python print? x = [1, 2, 3]; y = x; y.append(4); print(len(x))", "code_reasoning"),
    ("Given def f(n): return n if n < 2 else f(n-1) + f(n-2), what is f(10)?", "code_reasoning"),
    ("What is the time complexity of binary search on a sorted array of n elements?", "code_reasoning"),
    ("What is the output of print(sorted({3: 'a', 1: 'b', 2: 'c'}))?", "code_reasoning"),
    ("Trace: s = 0; for i in range(5): s += i * i. What is s?", "code_reasoning"),
    ("What does ''.join(reversed('router')) evaluate to in Python?", "code_reasoning"),
    ("Explain why a Python dict lookup is O(1) on average.", "code_reasoning"),
    ("A bag has 4 red and 6 blue balls. Two are drawn without replacement. P(both red)?", "math_competition"),
    ("What is 15% of 240?", "math_grade_school"),
    ("Write the first five prime numbers greater than 50.", "math_grade_school"),
    ("What does the expression [i for i in range(10) if i % 3 == 0] produce?", "code_reasoning"),
    ("Solve for x: 3x + 7 = 2x - 5.", "math_grade_school"),
)
MODES = ("balanced", "quality", "cost")


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    median_rps: float | None = None  # set by ``median_result``: the median of the runs' routes/s

    @property
    def rps(self) -> float:
        if self.median_rps is not None:
            return self.median_rps
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VariantResult:
    name: str
    router: str
    router_options: dict[str, str]
    server_options: dict[str, str]
    health_p50_ms: float = 0.0
    list_models_p50_ms: float = 0.0
    levels: list[LevelResult] = field(default_factory=list)
    rss_start_mib: float | None = None
    rss_peak_mib: float | None = None
    start_seconds: float = 0.0
    served_by: str = ""
    repeats: int = 1

    def level(self, concurrency: int) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        for lv, out in zip(self.levels, d["levels"]):
            out.pop("median_rps")
            out["rps"] = lv.rps
        return d


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def write_pool(path: Path, size: int = POOL_SIZE) -> list[str]:
    """Write the first ``size`` models of the default catalog to ``path``; return their ids."""
    from routerl.descriptors.catalog import load_catalog, save_catalog

    models = load_catalog(DEFAULT_CATALOG)[:size]
    if len(models) < size:
        raise ValueError(f"the default catalog has only {len(models)} models; the benchmark needs {size}")
    save_catalog(models, path)
    return [m.id for m in models]


def _proc_status_mib(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class ServerUnderTest:
    """``python -m routerl serve`` on 127.0.0.1 with a fresh registry of the 8-model pool."""

    def __init__(self, workdir: Path, router: str, router_options: dict[str, str], server_options: dict[str, str],
                 checkpoint: str | None = None, log: Callable[[str], None] = print):
        self.workdir = workdir
        catalog = workdir / "pool.yaml"
        if not catalog.exists():
            write_pool(catalog)
        db = workdir / f"registry-{time.monotonic_ns()}.db"
        cmd = [sys.executable, "-m", "routerl", "serve", "--host", "127.0.0.1", "--port", "0", "--db", str(db),
               "--catalog", str(catalog), "--access-log", str(workdir / "access.jsonl")]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        else:
            cmd += ["--router", router]
        for key, value in router_options.items():
            cmd += ["--router-opt", f"{key}={value}"]
        for key, value in server_options.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.stderr_path = workdir / "server.log"
        started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(self.stderr_path, "ab"),
                                     text=True)
        line = self._read_line(START_TIMEOUT_S)
        if not line.startswith("listening on "):
            self.stop()
            tail = self.stderr_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the server did not start ({line!r}); its log ends with:\n{tail}")
        self.start_seconds = time.perf_counter() - started
        self.target = line.split("listening on ", 1)[1].strip()
        self.rss_start_mib = _proc_status_mib(self.proc.pid, "VmRSS")

    def _read_line(self, timeout: float) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return box[0] if box else ""

    def rss_peak_mib(self) -> float | None:
        return _proc_status_mib(self.proc.pid, "VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _route_requests(n: int, offset: int = 0):
    from routerl.client import build_route_request

    out = []
    for i in range(offset, offset + n):
        text, domain = QUERIES[i % len(QUERIES)]
        out.append(build_route_request(text, mode=MODES[(i // len(QUERIES)) % len(MODES)], domain=domain))
    return out


def _timed_calls(fn, requests, timeout: float) -> tuple[list[float], int]:
    import grpc

    latencies, errors = [], 0
    for req in requests:
        t0 = time.perf_counter()
        try:
            fn(req, timeout=timeout)
        except grpc.RpcError:
            errors += 1
            continue
        latencies.append((time.perf_counter() - t0) * 1000.0)
    return latencies, errors


def measure_level(target: str, concurrency: int, requests: int, timeout: float = 60.0) -> LevelResult:
    """``requests`` Route calls from ``concurrency`` closed-loop clients (one channel each)."""
    import grpc

    from routerl.server.proto import router_pb2_grpc as pb_grpc

    per_client = [requests // concurrency + (1 if k < requests % concurrency else 0) for k in range(concurrency)]
    channels = [grpc.insecure_channel(target) for _ in range(concurrency)]
    results: list[tuple[list[float], int]] = [([], 0)] * concurrency
    barrier = threading.Barrier(concurrency + 1)
    try:
        stubs = [pb_grpc.RouterStub(ch) for ch in channels]
        for stub in stubs:  # connect every channel before timing
            stub.Route(_route_requests(1)[0], timeout=timeout)

        def client(k: int) -> None:
            reqs = _route_requests(per_client[k], offset=k * 7)
            barrier.wait()
            results[k] = _timed_calls(stubs[k].Route, reqs, timeout)

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(concurrency)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
    finally:
        for ch in channels:
            ch.close()
    latencies = [x for lat, _ in results for x in lat]
    errors = sum(e for _, e in results)
    return LevelResult(
        concurrency=concurrency, requests=requests, errors=errors, seconds=seconds,
        p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95), p99_ms=percentile(latencies, 99),
        mean_ms=statistics.fmean(latencies) if latencies else 0.0,
    )  # fmt: skip


def measure_floor(target: str, calls: int) -> tuple[float, float]:
    """p50 (ms) of a health check and of ListModels (the 8-model pool) on one channel."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from routerl.server.proto import router_pb2 as pb
    from routerl.server.proto import router_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check
        listing = pb_grpc.RouterStub(channel).ListModels
        for _ in range(20):
            health(health_pb2.HealthCheckRequest(), timeout=10)
            listing(pb.ListModelsRequest(), timeout=10)
        h, _ = _timed_calls(health, [health_pb2.HealthCheckRequest()] * calls, 10)
        lm, _ = _timed_calls(listing, [pb.ListModelsRequest()] * calls, 10)
    return percentile(h, 50), percentile(lm, 50)


def run_variant(name: str, workdir: Path, *, router: str, router_options: dict[str, str], server_options: dict[str, str],
                checkpoint: str | None, requests: int, concurrencies: Sequence[int], warmup: int, floor_calls: int,
                call_timeout: float = 120.0, log: Callable[[str], None] = print) -> VariantResult:
    result = VariantResult(name, router, dict(router_options), dict(server_options))
    log(f"[{name}] starting the server (router {checkpoint or router}, options {router_options or '-'}) ...")
    import grpc

    from routerl.server.proto import router_pb2_grpc as pb_grpc

    server = ServerUnderTest(workdir, router, router_options, server_options, checkpoint)
    try:
        result.start_seconds = server.start_seconds
        result.rss_start_mib = server.rss_start_mib

        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.RouterStub(channel)
            for req in _route_requests(max(1, warmup)):
                resp = stub.Route(req, timeout=call_timeout)
            result.served_by = resp.router
        result.health_p50_ms, result.list_models_p50_ms = measure_floor(server.target, floor_calls)
        log(f"[{name}] floor: health p50 {result.health_p50_ms:.3f} ms, ListModels p50 {result.list_models_p50_ms:.3f} ms")
        for c in concurrencies:
            level = measure_level(server.target, c, requests, call_timeout)
            result.levels.append(level)
            log(f"[{name}] c={c}: p50 {level.p50_ms:.3f} p95 {level.p95_ms:.3f} p99 {level.p99_ms:.3f} ms, "
                f"{_rate(level.rps)} routes/s, {level.errors} errors")
        result.rss_peak_mib = server.rss_peak_mib()
    except grpc.RpcError as exc:  # the server died or stopped answering: say so, not a gRPC traceback
        code = server.proc.poll()
        why = f"the server exited with code {code}" if code is not None else "the server is still running"
        try:
            tail = Path(server.stderr_path).read_text(errors="replace")[-3000:]
        except OSError:
            tail = ""
        raise RuntimeError(f"[{name}] a call to the server at {server.target} failed "
                           f"({exc.code().name}: {exc.details()}); {why}; its log ends with:\n{tail}") from None
    finally:
        server.stop()
    return result


def run_bench(*, router: str = "descriptor-score", router_options: dict[str, str] | None = None,
              compare: dict[str, str] | None = None, checkpoint: str | None = None, requests: int = 400,
              concurrencies: Sequence[int] = (1, 8), warmup: int = 30, floor_calls: int = 300,
              server_options: dict[str, str] | None = None, repeat: int = 1, call_timeout: float = 120.0,
              log: Callable[[str], None] = print) -> list[VariantResult]:
    """Measure the baseline (when ``compare`` is given) and the main variant; see the module docstring.

    ``compare``: options that make the baseline out of the main variant; ``server.NAME=VALUE``
    changes a ``routerl serve`` flag (e.g. ``server.max_batch=1``), any other key a router option
    (e.g. ``cache=false``). ``repeat``: run every variant this many times, interleaved, and report
    the median of each figure.
    """
    router_options = dict(router_options or {})
    # Nothing is shed in a benchmark: every client's call may wait (the latency includes it).
    server_options = {"max_queue": str(max(64, 2 * max(concurrencies))), "queue_timeout": str(call_timeout)} | dict(
        server_options or {}
    )
    variants = []
    if compare:
        base_router = dict(router_options)
        base_server = dict(server_options)
        for key, value in compare.items():
            if key.startswith("server."):
                base_server[key[len("server."):]] = value
            else:
                base_router[key] = value
        label = ", ".join(f"{k}={v}" for k, v in compare.items())
        variants.append((f"baseline ({label})", base_router, base_server))
    variants.append(("measured", router_options, server_options))
    runs: list[list[VariantResult]] = [[] for _ in variants]
    with tempfile.TemporaryDirectory(prefix="routerl-bench-") as tmp:
        for r in range(repeat):
            for k, (name, ropts, sopts) in enumerate(variants):  # interleaved, so drift hits every variant alike
                runs[k].append(run_variant(name if repeat == 1 else f"{name} #{r + 1}", Path(tmp), router=router,
                                           router_options=ropts, server_options=sopts, checkpoint=checkpoint,
                                           requests=requests, concurrencies=concurrencies, warmup=warmup,
                                           floor_calls=floor_calls, call_timeout=call_timeout, log=log))
    return [median_result(name, rs) for (name, _, _), rs in zip(variants, runs)]


def median_result(name: str, runs: list[VariantResult]) -> VariantResult:
    """One result whose every figure is the median over ``runs`` (the runs themselves when one)."""
    if len(runs) == 1:
        return runs[0]

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    first = runs[0]
    out = VariantResult(name, first.router, first.router_options, first.server_options, served_by=first.served_by)
    for attr in ("health_p50_ms", "list_models_p50_ms", "rss_start_mib", "rss_peak_mib", "start_seconds"):
        setattr(out, attr, med(getattr(r, attr) for r in runs))
    for lv in first.levels:
        same = [r.level(lv.concurrency) for r in runs]
        # latencies of the runs where a call succeeded (a run where every call failed measured none);
        # errors: the total over the runs, so routes/s is the median of each run's own figure
        timed = [x for x in same if x.errors < x.requests]
        out.levels.append(LevelResult(
            concurrency=lv.concurrency, requests=lv.requests, errors=sum(x.errors for x in same),
            seconds=med(x.seconds for x in same), p50_ms=med(x.p50_ms for x in timed) or 0.0,
            p95_ms=med(x.p95_ms for x in timed) or 0.0, p99_ms=med(x.p99_ms for x in timed) or 0.0,
            mean_ms=med(x.mean_ms for x in timed) or 0.0, median_rps=med(x.rps for x in same),
        ))  # fmt: skip
    out.repeats = len(runs)
    return out


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _rate(rps: float) -> str:
    return f"{rps:.0f}" if rps >= 100 else f"{rps:.3g}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def format_report(results: list[VariantResult], command: str) -> str:
    """A Markdown report: the command, one table row per variant, and the ratios."""
    env = environment()
    concurrencies = [lv.concurrency for lv in results[-1].levels]
    lines = [
        f"`{command}`",
        "",
        f"{POOL_SIZE}-model pool, loopback, server in a subprocess; client threads in the bench process; "
        f"{results[-1].levels[0].requests if results[-1].levels else 0} Route calls per level"
        + (f"; medians of {results[-1].repeats} interleaved runs" if results[-1].repeats > 1 else "") + ". "
        f"Python {env['python']}, {env['cpus']} CPUs, load average {', '.join(f'{x:.2f}' for x in env['loadavg'] or ())}.",
        "",
    ]
    head = ["variant", "router", "health p50 ms", "ListModels p50 ms"]
    for c in concurrencies:
        head += [f"c={c} p50 ms", f"c={c} p95 ms", f"c={c} p99 ms", f"c={c} routes/s"]
    head += ["RSS start MiB", "RSS peak MiB"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in results:
        row = [r.name, r.served_by or r.router, f"{r.health_p50_ms:.3f}", f"{r.list_models_p50_ms:.3f}"]
        for c in concurrencies:
            lv = r.level(c)
            if lv and lv.p50_ms <= 0:  # no call succeeded: no latency was measured
                row += ["-"] * 3 + [_rate(lv.rps)]
            else:
                row += [f"{lv.p50_ms:.3f}", f"{lv.p95_ms:.3f}", f"{lv.p99_ms:.3f}", _rate(lv.rps)] if lv else ["-"] * 4
        row += [f"{r.rss_start_mib:.0f}" if r.rss_start_mib else "-", f"{r.rss_peak_mib:.0f}" if r.rss_peak_mib else "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    main = results[-1]
    for r in results:
        parts = []
        for c in concurrencies:
            lv = r.level(c)
            if lv:
                parts.append(f"c={c} Route p50 = {_ratio(lv.p50_ms, r.health_p50_ms)} the health-check floor")
        lines.append(f"* {r.name}: " + "; ".join(parts) + ".")
    if len(results) > 1:
        base = results[0]
        parts = []
        for c in concurrencies:
            m, b = main.level(c), base.level(c)
            if m and b:
                parts.append(f"c={c}: p50 {_ratio(m.p50_ms, b.p50_ms)}, p99 {_ratio(m.p99_ms, b.p99_ms)}, "
                             f"routes/s {_ratio(m.rps, b.rps)}")
        parts.append(f"peak RSS {_ratio(main.rss_peak_mib, base.rss_peak_mib)}")
        lines.append(f"* measured / baseline: " + "; ".join(parts) + ".")
    errors = sum(lv.errors for r in results for lv in r.levels)
    if errors:
        lines.append(f"* {errors} Route calls failed during the measurement.")
    return "\n".join(lines)
