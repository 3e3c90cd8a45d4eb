"""Terminal text for core results (the CLI's and the demo's view of the DataFrames)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from .sizes import format_size


def format_count(n: int | float | None) -> str:
    """``2.5M``, ``12.3K``, ``950``."""
    n = int(n or 0)
    for suffix, factor in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return str(n)


def search_blocks(df: pd.DataFrame) -> str:
    """One block per repo: counts, recommended variant, the variants, the download command."""
    if df.empty:
        return "No models found. Try another query, fewer filters, or --all to include gated repos."
    blocks = []
    for i, row in enumerate(df.itertuples(index=False), start=1):
        recommended = (
            f"{row.best_quant or row.best_file} ({format_size(row.best_size)})"
            if row.best_file
            else "none"
        )
        available = ", ".join(
            f"{v['quant'] or v['filename']} ({format_size(v['size']).replace(' ', '')})"
            for v in row.variants
        )
        lines = [
            f"{i}. {row.id}" + ("  [gated]" if row.gated else ""),
            f"   ↓ {format_count(row.downloads)} downloads  ❤ {row.likes} likes  │  "
            f"Recommended: {recommended}",
            f"   Available: {available or 'no GGUF files'}",
        ]
        if row.download_command:
            lines.append(f"   Download: {row.download_command}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def to_json(df: pd.DataFrame, **attrs: Any) -> str:
    """Rows as JSON records (timestamps in ISO 8601), wrapped with ``attrs``."""
    records = json.loads(df.to_json(orient="records", date_format="iso"))
    return json.dumps({**attrs, "results": records}, indent=2, ensure_ascii=False)
