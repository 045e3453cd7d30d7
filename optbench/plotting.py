"""Matplotlib for files only: the Agg backend (no window, works headless) and one way to save."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """pyplot on the Agg backend; imported lazily so verbs that draw nothing stay fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write the PNG (parent folders made) and free the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
