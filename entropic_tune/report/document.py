"""A tiny document model rendered to Markdown or to self-contained HTML (images inlined as base64).

Blocks are tuples: ``("h1"|"h2"|"h3"|"p", text)``, ``("list", [text, ...])``,
``("table", DataFrame)``, ``("figure", path, caption)``.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

Block = tuple[Any, ...]

# Readable from a laptop down to a phone: the page never scrolls sideways (a wide table scrolls
# inside its own box, long words such as paths break), figures shrink to the column width.
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.45;overflow-wrap:anywhere}.scroll{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:collapse;font-size:0.9em;overflow-wrap:normal}th,td{border:1px solid #ccc;
padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}td{white-space:nowrap}
li{margin:0.3em 0}figure{margin:1.5em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:0.9em}.note{background:#fff6e0;padding:0.5em 1em}"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def _md_table(frame: pd.DataFrame) -> str:
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.itertuples(index=False):
        cells = (_cell(v).replace("|", "\\|").replace("\n", " ") for v in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown text; figure paths are written relative to ``base`` (the report's folder)."""
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + rest[0])
        elif kind == "p":
            out.append(rest[0])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in rest[0]))
        elif kind == "table":
            out.append(_md_table(rest[0]))
        elif kind == "figure":
            path, caption = rest
            out.append(f"![{caption}]({Path(path).relative_to(base).as_posix()})\n\n*{caption}*")
    return "\n\n".join(out) + "\n"


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def to_html(blocks: list[Block], title: str) -> str:
    """A single self-contained HTML page (figures embedded as ``data:image/png;base64``)."""
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(rest[0])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "table":
            out.append(_html_table(rest[0]))
        elif kind == "figure":
            path, caption = rest
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    body = "\n".join(out)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
