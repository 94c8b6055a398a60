"""The training run's validation metric, timed: cached turns against the whole context recomputed.

    python -m routerl.bench.validation --config configs/policy_smollm2.yaml --set model.adapter=routerl/assets/policy
    python -m routerl.bench.validation --config configs/grpo_tiny.yaml --episodes 16      # seconds, no shared data

Builds the config's environments and fixed validation episodes (``validation.n_episodes`` and
``validation.seed`` unless ``--episodes`` is given), loads the model as training does
(``load_trainable``: the base with its LoRA adapter, float32), and plays every episode at each of
``validation.aiq_knobs`` in fast mode twice, in one run: first as the validation did before
(``score_actions``: the whole context, system message included, run again for every turn), then
as ``routerl.train.validate`` does (the shared prefix once, each turn continuing the state kept by
the turn before). Printed: the time of each, the speed-up, how many episodes made the same calls
and the AIQ of each. Same decisions are expected (the scores agree within float rounding;
``tests/test_train_validate.py``).
"""

from __future__ import annotations

import argparse
import sys
import time


def reference_play(model, tokenizer, episode, policy) -> list:
    """Fast mode as the validation played it before: the whole context run again every turn
    (``score_actions``). Returns the action probabilities of each turn (``tests/test_train_validate.py``
    compares them with the cached path's)."""
    from routerl.env.actions import format_accept, format_route
    from routerl.policy.prompt import encode, episode_prompt
    from routerl.policy.scoring import action_options, score_actions

    context = encode(tokenizer, episode_prompt(tokenizer, episode.spec, max_query_chars=policy.max_query_chars, style=policy.prompt_style))
    probs = []
    while not episode.done:
        options = action_options(len(episode.spec.pool), episode.calls, allow_accept=bool(episode.calls))
        probs.append(score_actions(model, tokenizer, context, options))
        best = options[int(probs[-1].argmax())]
        text = format_accept() if best.is_accept else format_route(best.index)
        result = episode.step(text)
        context += encode(tokenizer, text) + (encode(tokenizer, result.info) if result.info else [])
    return probs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routerl.bench.validation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--episodes", type=int, help="validation episodes (default: the config's validation.n_episodes)")
    args = parser.parse_args(argv)

    from routerl.train.config import load_config

    try:
        config = load_config(args.config, list(args.set))
    except (ValueError, FileNotFoundError) as exc:
        print(f"routerl.bench.validation: error: {exc}", file=sys.stderr)
        return 2
    n = args.episodes if args.episodes is not None else config.validation.n_episodes
    knobs = list(config.validation.aiq_knobs) or [0.0]
    if n < 1:
        print("routerl.bench.validation: error: --episodes must be >= 1", file=sys.stderr)
        return 2

    import torch

    from routerl.train.episodes import build_envs, validation_episodes
    from routerl.train.setup import load_trainable
    from routerl.train.validate import _play_fast, knob_sweep, sweep_aiq

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    t = time.perf_counter()
    try:
        episodes = validation_episodes(build_envs(config), n, config.validation.seed)
    except (ValueError, OSError) as exc:  # the config's data files and splits
        print(f"routerl.bench.validation: error: {exc}", file=sys.stderr)
        return 2
    model, tokenizer = load_trainable(config)
    model.eval()
    policy = config.policy_config
    print(f"{n} validation episodes x knobs {knobs} ({n * len(knobs)} plays); setup {time.perf_counter() - t:.1f} s; torch threads {torch.get_num_threads()}")

    results = {}
    with torch.no_grad():
        for name in ("recomputed", "cached"):
            games = knob_sweep(episodes, knobs)
            flat = [g for row in games for g in row]
            t = time.perf_counter()
            if name == "recomputed":
                for g in flat:
                    reference_play(model, tokenizer, g, policy)
            else:
                _play_fast(model, tokenizer, flat, policy)
            results[name] = (time.perf_counter() - t, flat, sweep_aiq(games, episodes))
    (t_ref, ref, aiq_ref), (t_new, new, aiq_new) = results["recomputed"], results["cached"]
    same = sum(a.calls == b.calls for a, b in zip(ref, new))
    calls = sum(len(g.calls) for g in new) / len(new)
    print(f"recomputed: {t_ref:.1f} s ({t_ref / len(ref):.3f} s per play), AIQ {aiq_ref:.4f}")
    print(f"cached:     {t_new:.1f} s ({t_new / len(new):.3f} s per play), AIQ {aiq_new:.4f}")
    print(f"speed-up {t_ref / t_new:.2f}x; same calls in {same} of {len(new)} plays; {calls:.2f} calls per play")
    return 0


if __name__ == "__main__":
    sys.exit(main())
