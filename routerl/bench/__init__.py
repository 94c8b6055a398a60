"""Benchmarks of the serving path (``routerl bench``); see ``routerl.bench.service``."""
