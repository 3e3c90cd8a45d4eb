"""HTML tables for panels: escaped, captioned (screen readers announce the caption), compact."""

from __future__ import annotations

import pandas as pd

TABLE_STYLES = [
    {"selector": "", "props": "border-collapse: collapse; margin: 4px 0;"},
    {"selector": "caption", "props": "text-align: left; font-weight: bold; padding: 4px 0;"},
    {
        "selector": "th, td",
        "props": "padding: 2px 10px; text-align: left; white-space: nowrap; "
        "border-bottom: 1px solid var(--jp-border-color2, #ddd);",
    },
    {"selector": "td:last-child", "props": "white-space: normal;"},  # lists may wrap
]


def html_table(df: pd.DataFrame, caption: str) -> str:
    """``df`` (cells already formatted for reading) as an HTML table, every cell escaped."""
    styler = df.style.hide(axis="index").set_caption(caption).set_table_styles(TABLE_STYLES)
    return styler.format(escape="html").to_html()
