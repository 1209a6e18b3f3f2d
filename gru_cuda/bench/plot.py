"""The speedup plot (PNG) of a run; needs matplotlib."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from .cases import DTYPES, MODES


def plot(path: str, meta: dict, rows: List[dict]) -> Optional[str]:
    """Speedup of gru_cuda (auto dispatch) by batch (x) and hidden size (one line each), one
    panel per mode x dtype x baseline: torch.nn.GRU (cuDNN) on a GPU; torch.nn.GRU and the step
    loop on a CPU. Returns None, or why nothing was drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot"
    from matplotlib.ticker import FuncFormatter, NullFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}")

    def sparse(v, _):  # minor ticks: label 2x and 5x only, or the labels collide
        m = v / 10 ** math.floor(math.log10(v)) if v > 0 else 0
        return f"{v:g}" if any(abs(m - k) < 1e-6 for k in (2, 5)) else ""
    cuda = meta["device"].startswith("cuda")
    baselines = [("vs_torch", "torch.nn.GRU (cuDNN)" if cuda else "torch.nn.GRU")]
    if not cuda:
        baselines.append(("vs_steploop", "step loop"))
    ok = [r for r in rows if r["candidate"] == "gru_cuda" and r["status"] == "ok"]
    modes = [m for m in MODES if any(r["mode"] == m for r in ok)]
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in ok)]
    panels = [(m, d, b) for m in modes for b in baselines for d in dtypes]
    panels = [p for p in panels if any(r["mode"] == p[0] and r["dtype"] == p[1] and r.get(p[2][0])
                                       for r in ok)]
    if not panels:
        return "no gru_cuda speedups to plot"
    all_h = sorted({r["H"] for r in ok})
    all_t = sorted({r["T"] for r in ok})
    t_count = {t: sum(r["T"] == t for r in ok) for t in all_t}
    main_t = max(all_t, key=lambda t: t_count[t])  # the grid's T: solid lines, others dotted
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    ncols = len(dtypes) * len(baselines)
    nrows = len(modes)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for m, d, (col, blabel) in panels:
        ax = axes[modes.index(m)][[(dd, bb) for bb in baselines for dd in dtypes].index(
            (d, (col, blabel)))]
        ax.set_visible(True)
        sel = [r for r in ok if r["mode"] == m and r["dtype"] == d and r.get(col)]
        # reset_after=True when both exist: the only convention every baseline runs
        if any(r["reset_after"] for r in sel):
            sel = [r for r in sel if r["reset_after"]]
        by_ht: Dict[Tuple[int, int], List[dict]] = {}
        for r in sel:
            by_ht.setdefault((r["H"], r["T"]), []).append(r)
        for (h, t), rs in sorted(by_ht.items()):
            rs = sorted(rs, key=lambda r: r["B"])
            # one colour per H and one marker per T, the same in every panel
            ax.plot([r["B"] for r in rs], [r[col] for r in rs], label=f"H={h}, T={t}",
                    color=colors[all_h.index(h) % len(colors)],
                    marker=markers[all_t.index(t) % len(markers)],
                    ls="-" if t == main_t else ":")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({r["B"] for r in sel})
        ax.set_xticks(batches)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(sparse))
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(lo, 0.8), max(hi, 1.25))  # parity always in view
        ax.set_xlabel("batch size B")
        ax.set_ylabel(f"speedup vs {blabel}")
        ra = bool(sel and sel[0]["reset_after"])
        ax.set_title(f"{m}, {d}, reset_after={ra}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"gru_cuda speedup (>1 = faster): {meta['device_name']}, torch {meta['torch']}, "
                 f"{meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
