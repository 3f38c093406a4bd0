"""`python -m sfbench.pep`: sweep the horizon T of one PEP (docs/theory.md section D), print a table, write a CSV
and a PNG of the worst case scaled by SFN's claimed rates (flat in T when a rate is tight).

    python -m sfbench.pep --method sf_constant --T 1-20
    python -m sfbench.pep --method sf_poly --T 1-10,12,16 --alpha 0.5 --out results/
    python -m sfbench.pep --method sf_linear --T 1-15 --gamma 0.1 --no-cache
    python -m sfbench.pep --method sf_increasing --T 1-30 --alpha 0.5 --c 0.1

After the table it prints fits of T^(−a) and of 1/log(T+1) to the sweep (`sfbench.pep.rates`): which rate a short
sweep supports is a comparison, not a reading of one scaled curve.

Bad input (malformed T, unknown method, α outside (0, 1), …) exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path

from .problems import ANCHORS, DEFAULT_SOLVER, LINEAR_AVERAGINGS, METHODS, SOLVERS, scalings, sweep
from .rates import fit_rates

#: A horizon larger than this is refused: the SDP has O(T²) constraints.
MAX_T = 200

_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def parse_horizons(text: str) -> list[int]:
    """'1-20' → 1 … 20, '1-20:5' → 1, 6, 11, 16, '1-5,8,10' → 1 … 5, 8, 10 (sorted, without duplicates).
    Raises ValueError with a readable message on anything else."""
    out: set[int] = set()
    parts = [p.strip() for p in str(text).split(",")]
    if not text or not all(parts):
        raise ValueError(f"malformed T {text!r}: expected e.g. '1-20', '5', '1-20:2' or '1-5,8,10'")
    for part in parts:
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"malformed T range {part!r}: expected 'N', 'A-B' or 'A-B:STEP' with positive integers")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if lo < 1:
            raise ValueError(f"T must be >= 1, got {part!r}")
        if hi < lo:
            raise ValueError(f"empty T range {part!r}: the end is below the start")
        if step < 1:
            raise ValueError(f"T range step must be >= 1, got {part!r}")
        if hi > MAX_T:
            raise ValueError(f"T = {hi} is above the limit {MAX_T} (SDP size grows as T²)")
        out.update(range(lo, hi + 1, step))
    return sorted(out)


def _number(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool, what: str):
    """argparse type: a finite float inside an interval, with the interval in the error message."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value)
        if ok and lo is not None:
            ok = value > lo if lo_open else value >= lo
        if ok and hi is not None:
            ok = value < hi if hi_open else value <= hi
        if not ok:
            raise argparse.ArgumentTypeError(f"must be in {what}, got {text!r}")
        return value
    return parse


def build_parser(exit_on_error: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sfbench.pep", exit_on_error=exit_on_error,
        description="Worst case of schedule-free SGD on L-smooth nonconvex functions by PEP (docs/theory.md D): "
                    "min_t ||grad f(y_t)||^2 (or ||x_T - z_T||^2 for xz_distance) under f(x_0) - f(x_T) <= delta.")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="sf_constant: constant step, uniform averaging; sf_linear: step gamma*(t+1); "
                        "sf_poly: averaging c=(t+1)^-alpha; sf_increasing: growing c=1-(1-c)(t+1)^-alpha; "
                        "xz_distance: ||x_T - z_T||^2 of sf_linear (Assumption 2)")
    p.add_argument("--T", required=True, metavar="RANGE",
                   help="horizons: '1-20', '8', '1-20:2' (step) or a comma list '1-5,8,10'")
    p.add_argument("--beta", type=_number(0.0, 1.0, False, False, "[0, 1]"), default=1.0,
                   help="interpolation beta of [A1] (default 1: SFN's analysis, heavy-ball form)")
    p.add_argument("--gamma", type=_number(0.0, None, True, False, "(0, inf)"), default=1.0,
                   help="base step gamma (default 1 = 1/L)")
    p.add_argument("--alpha", type=_number(0.0, None, False, False, "[0, inf)"), default=0.5,
                   help="averaging exponent: sf_poly in (0, 1), sf_increasing >= 0 (default 0.5)")
    p.add_argument("--c", type=_number(0.0, 1.0, False, False, "[0, 1]"), default=0.1,
                   help="sf_increasing only: the first averaging coefficient c_1 (default 0.1, IAM's)")
    p.add_argument("--averaging", choices=LINEAR_AVERAGINGS, default="uniform",
                   help="averaging for sf_linear / xz_distance (default uniform, as SFN Thm 4)")
    p.add_argument("--L", type=_number(0.0, None, True, False, "(0, inf)"), default=1.0, help="smoothness L")
    p.add_argument("--delta", type=_number(0.0, None, True, False, "(0, inf)"), default=1.0,
                   help="initial condition f(x_0) - f(x_T) <= delta")
    p.add_argument("--anchor", choices=ANCHORS, default="final",
                   help="initial condition: final = f(x_0) - f(x_T) <= delta (default, PEPit's GD example); "
                        "lower = f(x_0) - f_low <= delta with f_i >= f_low + ||g_i||^2/(2L) at every point")
    p.add_argument("--solver", type=str.upper, choices=SOLVERS, default=DEFAULT_SOLVER,
                   help=f"cvxpy solver (default {DEFAULT_SOLVER})")
    p.add_argument("--out", default="pep_results", metavar="DIR",
                   help="directory for the CSV and the PNG (default ./pep_results)")
    p.add_argument("--no-cache", action="store_true", help="solve every PEP again (and do not write the cache)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p


def _tag(args) -> str:
    tag = f"pep_{args.method}_beta{args.beta:g}_gamma{args.gamma:g}"
    if args.method == "sf_poly":
        tag += f"_alpha{args.alpha:g}"
    if args.method == "sf_increasing":
        tag += f"_alpha{args.alpha:g}_c{args.c:g}"
    if args.method in ("sf_linear", "xz_distance") and args.averaging != "uniform":
        tag += f"_{args.averaging}"
    if args.anchor != "final":
        tag += f"_{args.anchor}"
    return tag


def _fmt(v: float) -> str:
    return f"{v:.6g}" if math.isfinite(v) else ("unbounded" if v > 0 else str(v))


def write_csv(path: Path, rows: list[dict], labels: list[str]) -> None:
    fields = ["method", "T", "beta", "gamma", "alpha", "c", "averaging", "L", "delta", "anchor", "solver", "status",
              "worst_case",
              *labels, "wall_s", "cached"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(fields)
        for r in rows:
            w.writerow([r["method"], r["T"], r["beta"], r["gamma"], "" if r["alpha"] is None else r["alpha"],
                        r.get("c", ""),
                        r["averaging"] or "", r["L"], r["delta"], r["anchor"], r["solver"], r["status"],
                        repr(r["value"]),
                        *[repr(r["scaled"][k]) for k in labels], f"{r['wall_s']:.3f}", int(r["cached"])])


def plot(path: Path, rows: list[dict], labels: list[str], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ts = [r["T"] for r in rows if math.isfinite(r["value"])]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax0.loglog(Ts, [r["value"] for r in rows if math.isfinite(r["value"])], "o-", ms=3)
    ax0.set_xlabel("T")
    ax0.set_ylabel("worst case")
    ax0.grid(True, which="both", alpha=0.3)
    # The claim under test (labels[0]) on the left axis, the comparison scaling on its own right axis.
    lines = []
    for i, label in enumerate(labels[:2]):
        ax = ax1 if i == 0 else ax1.twinx()
        lines += ax.plot(Ts, [r["scaled"][label] for r in rows if math.isfinite(r["value"])], "o-" if i == 0 else
                         "s--", ms=3, color=f"C{i}", label=label)
        ax.set_ylabel(label, color=f"C{i}")
        ax.set_ylim(bottom=0)
    ax1.set_xlabel("T")
    ax1.grid(True, alpha=0.3)
    ax1.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
    n_unb = sum(1 for r in rows if r["value"] == math.inf)
    if n_unb:
        title += f"  ({n_unb} horizon(s) unbounded, not drawn)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.method == "sf_poly" and not 0.0 < args.alpha < 1.0:
        parser.error(f"argument --alpha: must be in (0, 1) for sf_poly, got {args.alpha:g}")
    try:
        horizons = parse_horizons(args.T)
    except ValueError as exc:
        parser.error(f"argument --T: {exc}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"argument --out: cannot create {str(out)!r}: {exc}")

    labels = [label for label, _ in scalings(args.method, args.alpha)]
    params = {"beta": args.beta, "gamma": args.gamma, "alpha": args.alpha, "L": args.L, "delta": args.delta,
              "solver": args.solver, "averaging": args.averaging, "anchor": args.anchor,
              "use_cache": not args.no_cache, "c": args.c}
    desc = f"{args.method}: beta={args.beta:g} gamma={args.gamma:g} L={args.L:g} delta={args.delta:g}"
    if args.method == "sf_poly":
        desc += f" alpha={args.alpha:g}"
    if args.method == "sf_increasing":
        desc += f" alpha={args.alpha:g} c={args.c:g}"
    if args.method in ("sf_linear", "xz_distance"):
        desc += f" averaging={args.averaging}"
    if args.anchor != "final":
        desc += f" anchor={args.anchor}"
    print(f"{desc} solver={args.solver}")
    header = f"{'T':>4} {'worst case':>12} " + " ".join(f"{k:>14}" for k in labels) + f" {'wall s':>8}  status"
    print(header)
    print("-" * len(header))

    def show(r: dict) -> None:
        status = r["status"] + (" (cached)" if r["cached"] else "")
        print(f"{r['T']:>4} {_fmt(r['value']):>12} " + " ".join(f"{_fmt(r['scaled'][k]):>14}" for k in labels)
              + f" {r['wall_s']:>8.2f}  {status}", flush=True)

    try:
        rows = sweep(args.method, horizons, progress=show, **params)
    except ValueError as exc:                      # a combination argparse cannot see; not expected, but no traceback
        parser.error(str(exc))
    solved = [r for r in rows if not r["cached"]]
    print(f"total wall time of the solves run now: {sum(r['wall_s'] for r in solved):.1f} s "
          f"({len(solved)} solved, {len(rows) - len(solved)} from the cache)")

    finite = [r for r in rows if math.isfinite(r["value"]) and r["value"] > 0 and r["T"] >= 5]
    if len(finite) >= 3 and args.method != "xz_distance":
        print(f"fitted rates on T = {finite[0]['T']} … {finite[-1]['T']} (least squares in log space):")
        for fit in fit_rates([r["T"] for r in finite], [r["value"] for r in finite]):
            print("  " + fit.describe())
    tag = _tag(args)
    csv_path = out / f"{tag}.csv"
    write_csv(csv_path, rows, labels)
    print(f"wrote {csv_path}")
    if not args.no_plot:
        png_path = out / f"{tag}.png"
        plot(png_path, rows, labels, desc)
        print(f"wrote {png_path}")
    failed = [r["T"] for r in rows if math.isnan(r["value"])]
    if failed:
        print(f"solver failed at T = {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
