"""Draw the speed-ups of one benchmark run against micrograd with its collector off.

    python benchmarks/bench_engine.py --json engine.json
    python benchmarks/bench_replay.py --json replay.json
    python benchmarks/plot_speed.py engine.json replay.json docs/img/speed.png
    python benchmarks/plot_speed.py engine.json replay.json docs/img/speed.png \
        record.json w1.json w1-numba.json     # bench_alternating.py ... --json

One bar per workload and kernels: micrograd's time over tapegrad's, both measured in
the same run (log scale; 1x is micrograd's speed). Given ``bench_alternating.py``
results, the recording and moons-step bars show their median ratio over alternating
fresh processes instead of the in-process one.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def speedups(engine: dict, replay: dict,
             alternating: dict | None = None) -> list[tuple[str, float, float | None]]:
    """(workload, NumPy kernels, numba kernels or None) speed-ups over micrograd gc off;
    ``alternating``: ``bench_alternating.py`` results by (workload, kernels). A
    workload measured that way shows only what was measured that way."""
    nb = engine.get("numba") or {}
    w3, w3_nb = engine["w3"][0], (nb.get("w3") or [None])[0]
    peer_w3 = w3["micrograd_backward_s_gc_off"]
    steps = replay["steps"]
    peer_step = steps["micrograd_step_gc_off"]

    def ratio(peer: float, ours: float | None) -> float | None:
        return None if ours is None else peer / ours

    alternating = alternating or {}

    def paired(workload: str, peer: float, ours: float | None,
               kernels: str = "numpy") -> float | None:
        if not any(w == workload for w, _ in alternating):
            return ratio(peer, ours)
        found = alternating.get((workload, kernels))
        return None if found is None else statistics.median(found["ratios"]["micrograd_gc_off"])

    return [
        ("recording, per scalar op", paired("record", engine["record"]["micrograd_gc_off"],
                                            engine["record"]["tapegrad"]), None),
        ("nn.Layer(16, 16) call", ratio(engine["bulk"]["micrograd_gc_off"],
                                        engine["bulk"]["tapegrad"]), None),
        ("moons training step (W1)", paired("w1", engine["w1"]["micrograd_gc_off"],
                                            engine["w1"]["tapegrad"]),
         paired("w1", engine["w1"]["micrograd_gc_off"], nb["w1"]["tapegrad"], "numba")
         if nb else None),
        (f"DAG backward, {w3['ops']:,} ops, first call",
         ratio(peer_w3, w3["tapegrad_backward_first_s"]),
         ratio(peer_w3, w3_nb["tapegrad_backward_first_s"]) if w3_nb else None),
        (f"DAG backward, {w3['ops']:,} ops, again",
         ratio(peer_w3, w3["tapegrad_backward_s"]),
         ratio(peer_w3, w3_nb["tapegrad_backward_s"]) if w3_nb else None),
        ("moons step by replay", ratio(peer_step, steps["replay_step"]),
         ratio(peer_step, steps.get("replay_step_numba"))),
    ]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engine, replay = (json.loads(Path(p).read_text()) for p in argv[:2])
    alternating = {}
    for p in argv[3:]:
        found = json.loads(Path(p).read_text())
        alternating[found["workload"], found.get("kernels", "numpy")] = found
    rows = speedups(engine, replay, alternating)[::-1]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    height = 0.38
    for k, (_, numpy_x, numba_x) in enumerate(rows):
        ax.barh(k + height / 2, numpy_x, height, color="#4c72b0",
                label="NumPy kernels (default)")
        ax.text(numpy_x * 1.05, k + height / 2, f"{numpy_x:,.1f}x", va="center", fontsize=8)
        if numba_x is not None:
            ax.barh(k - height / 2, numba_x, height, color="#dd8452", label="numba kernels")
            ax.text(numba_x * 1.05, k - height / 2, f"{numba_x:,.1f}x", va="center",
                    fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    how = ("same session; recording and moons step: median over alternating processes"
           if alternating else "same run")
    ax.set_xlabel(f"times faster than micrograd 0.1.0, garbage collector off ({how})")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))              # one entry per kernels
    ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    ax.set_xlim(0.5, max(x for r in rows for x in r[1:] if x) * 4)
    fig.tight_layout()
    fig.savefig(argv[2], dpi=120)
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
