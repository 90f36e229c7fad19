"""`pickstyle eval` output: a terminal table, a JSON file and a PNG bar chart of the scores."""

from __future__ import annotations

import json
from pathlib import Path

from pickstyle.files import atomic_output


def _metric_keys(results: list[dict]) -> list[str]:
    keys: list[str] = []
    for result in results:
        keys += [k for k in result["metrics"] if k not in keys]
    return keys


def format_table(results: list[dict]) -> str:
    """Metrics as rows, one column per stylised video; arrows give the better direction."""
    keys = _metric_keys(results)
    names = [Path(r["stylised"]).name for r in results]
    directions = {k: d for r in results for k, d in r["directions"].items()}
    width = max([len(k) + 2 for k in keys] + [8])
    columns = [max(10, len(n)) for n in names]
    lines = [f"{'metric':<{width}}" + "".join(f" {n:>{c}}" for n, c in zip(names, columns))]
    for key in keys:
        arrow = {"higher": "↑", "lower": "↓"}.get(directions.get(key), " ")
        cells = []
        for result, c in zip(results, columns):
            value = result["metrics"].get(key)
            cells.append(f" {'-':>{c}}" if value is None else f" {value:>{c}.4f}")
        lines.append(f"{key + ' ' + arrow:<{width}}" + "".join(cells))
    return "\n".join(lines)


def write_json(results: list[dict], path) -> Path:
    """All results, one object per stylised video, written atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    return Path(path)


def plot_results(results: list[dict], path) -> Path:
    """A PNG bar chart: one panel per metric, one bar per stylised video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _metric_keys(results)
    names = [Path(r["stylised"]).stem for r in results]
    directions = {k: d for r in results for k, d in r["directions"].items()}
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, key in zip(axes.flat, keys):
        values = [r["metrics"].get(key, float("nan")) for r in results]
        ax.bar(range(len(values)), values, color=[colours[i % 10] for i in range(len(values))])
        ax.set_title(f"{key} ({'higher' if directions.get(key) == 'higher' else 'lower'} is better)", fontsize=8)
        ax.set_xticks(range(len(values)), names, rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
