"""Adaptive simultaneous mode against the fixed two-cycle budget and serial training
on the Peaks example, over seeds (issue 14).

    python benchmarks/python/bench_adaptive.py --seeds 0-9 [--threads 1] [--out results.jsonl]

For every seed s (train.seed = data.seed = s) it trains examples/peaks.toml three
times: serial, simultaneous with the fixed budget (mgrit.fwd_iterations =
bwd_iterations = 2), and simultaneous with mgrit.adaptive = true. It prints one JSON
line per run (validation accuracy, seconds, gradient evaluations, MGRIT cycles per
iteration, safeguard switches) and a summary: the accuracy of each mode per seed, the
adaptive mode's distance to serial, and its mean cost per iteration relative to the
fixed budget's (cycles, the engine's work measure, and wall time).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

from layerparallel.config import load_config  # noqa: E402
from layerparallel.data import load_dataset  # noqa: E402
from layerparallel.train import build_model, train  # noqa: E402

MODES = {
    "serial": ['train.mode="serial"'],
    "fixed": ['train.mode="simultaneous"'],
    "adaptive": ['train.mode="simultaneous"', "mgrit.adaptive=true"],
}


def seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",")]


def run(seed: int, mode: str, threads: int) -> dict:
    cfg = load_config(ROOT / "examples" / "peaks.toml",
                      [f"train.seed={seed}", f"data.seed={seed}", f"train.threads={threads}", *MODES[mode]])
    data = load_dataset(cfg.data, cfg.base_dir)
    model = build_model(cfg, data)
    t = time.perf_counter()
    r = train(model, data, cfg)
    seconds = time.perf_counter() - t
    cycles = sum(h.get("cycles", 0) for h in r.history if h["iteration"] > 0)
    return {"seed": seed, "mode": mode, "val_accuracy": r.final["val_accuracy"], "seconds": round(seconds, 2),
            "iterations": r.iterations, "evaluations": r.gradient_evaluations,
            "cycles_per_iteration": cycles / max(r.iterations, 1),
            "switches": len(r.mgrit.get("safeguard_switches", [])) if r.mgrit else 0, "stop": r.stop_reason}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args()
    rows = []
    for s in seeds(args.seeds):
        for mode in MODES:
            row = run(s, mode, args.threads)
            rows.append(row)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(line + "\n")
    by = {(r["seed"], r["mode"]): r for r in rows}
    print("\nseed  serial  fixed  adaptive  adaptive-serial")
    gaps = []
    for s in sorted({r["seed"] for r in rows}):
        a, f, se = by[s, "adaptive"], by[s, "fixed"], by[s, "serial"]
        gaps.append(100 * (a["val_accuracy"] - se["val_accuracy"]))
        print(f"{s:4d}  {100 * se['val_accuracy']:6.1f}  {100 * f['val_accuracy']:5.1f}  "
              f"{100 * a['val_accuracy']:8.1f}  {gaps[-1]:+15.1f}")
    ad = [r for r in rows if r["mode"] == "adaptive"]
    fx = [r for r in rows if r["mode"] == "fixed"]
    cyc = statistics.mean(r["cycles_per_iteration"] for r in ad) / statistics.mean(r["cycles_per_iteration"] for r in fx)
    sec = statistics.mean(r["seconds"] / r["iterations"] for r in ad) / \
        statistics.mean(r["seconds"] / r["iterations"] for r in fx)
    print(f"\nadaptive: min accuracy {100 * min(r['val_accuracy'] for r in ad):.1f}%, worst gap to serial "
          f"{min(gaps):+.1f} points; cost per iteration vs fixed: {cyc:.2f}x cycles, {sec:.2f}x seconds")


if __name__ == "__main__":
    main()
