"""The one report writer: progress lines, side-by-side tables, results JSON and a PNG chart.

Everything printed is also kept, with the raw figures a benchmark adds to `data`, in
benchmarks/results/<name>.json (gitignored), so a run can be read again without re-running.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Panel:
    """One chart panel: horizontal bars, one group per row, one bar per series."""

    title: str
    values: Mapping[str, Mapping[str, float]]
    """Row label -> series -> value."""
    target: float | None = None
    """Drawn as a dashed line."""


def show(value: Any) -> str:
    """Format a table cell: '-' for nothing, fewer decimals as numbers grow."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


@dataclass
class Report:
    """A benchmark's output, printed as it goes and saved at the end."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.data |= {"machine": machine(), "tables": {}, "lines": []}

    def log(self, message: str) -> None:
        """Print a progress line with the seconds since the start."""
        print(f"[{time.perf_counter() - self.started:6.1f} s] {message}", flush=True)

    def line(self, text: str = "") -> None:
        """Print a result line (kept in the JSON)."""
        print(text, flush=True)
        self.data["lines"].append(text)

    def table(
        self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str = ""
    ) -> None:
        """Print rows side by side under `columns`: first column left, the rest right-aligned."""
        # Short rows are padded: a total may leave columns empty.
        cells = [[show(value) for value in row] + [""] * (len(columns) - len(row)) for row in rows]
        widths = [
            max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(columns)
        ]

        def format_row(row: Sequence[str]) -> str:
            rest = (text.rjust(width) for text, width in zip(row[1:], widths[1:], strict=True))
            return "  " + "  ".join([row[0].ljust(widths[0]), *rest])

        rule = "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [f"\n{title}", format_row(list(columns)), rule, *map(format_row, cells)]
        print("\n".join(lines + ([f"  ({note})"] if note else [])))
        self.data["tables"][title] = {"columns": list(columns), "rows": cells, "note": note}

    def save(self, panels: Sequence[Panel] = (), chart_title: str = "") -> None:
        """Write results/<name>.json, and results/<name>.png when there are panels."""
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.data["total_seconds"] = time.perf_counter() - self.started
        self.data["machine"]["load_average_after"] = os.getloadavg()
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        written = [path]
        if panels:
            written.append(save_chart(RESULTS_DIR / f"{self.name}.png", panels, chart_title))
        self.log("wrote " + " and ".join(str(each) for each in written))


def machine() -> dict[str, Any]:
    """Describe the machine and how busy it is now."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("mlflow", "mlserver", "fastapi", "uvicorn", "scikit-learn", "httpx", "grpcio"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return {
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": os.getloadavg(),
        "versions": versions,
    }


def save_chart(path: Path, panels: Sequence[Panel], title: str) -> Path:
    """Draw the panels side by side, sharing the row labels."""
    import matplotlib

    matplotlib.use("Agg")  # files only: benchmarks run headless
    import matplotlib.pyplot as plt

    rows = list(dict.fromkeys(row for panel in panels for row in panel.values))
    size = (6.5 * len(panels), 0.5 * len(rows) + 2)
    figure, axes = plt.subplots(1, len(panels), figsize=size, sharey=True, squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        series = list(dict.fromkeys(name for bars in panel.values.values() for name in bars))
        height = 0.8 / max(len(series), 1)
        for slot, name in enumerate(series):
            positions = [row + (slot - (len(series) - 1) / 2) * height for row in range(len(rows))]
            values = [panel.values.get(row, {}).get(name, 0.0) for row in rows]
            axis.barh(positions, values, height=height, label=name)
            for position, value in zip(positions, values, strict=True):
                if value:
                    axis.text(value, position, f" {show(value)}", va="center", fontsize=7)
        if panel.target is not None:
            axis.axvline(panel.target, color="#c44e52", linestyle="--", linewidth=1)
        axis.set_title(panel.title, fontsize=10)
        axis.legend(loc="lower right", fontsize=8)
    axes[0][0].set_yticks(range(len(rows)), rows)
    axes[0][0].invert_yaxis()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
