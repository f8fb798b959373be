"""A flow drawn as SVG, server-side (the admin shows it; no JavaScript, no CDN).

Nodes are laid out in columns by their distance from the start node along transitions and
fallbacks; a node reached only by a global transition goes in the last column. Forward
edges are straight arrows, edges back (or within a column) curve below the boxes.
Global transitions are listed above the drawing: they leave every node.
"""

from __future__ import annotations

from html import escape

from orchestrator.flows.spec import Flow

BOX_W, BOX_H = 130, 46
COL_GAP, ROW_GAP = 120, 40
MARGIN, TOP = 20, 34


def _columns(flow: Flow) -> dict[str, int]:
    column = {flow.start: 0}
    frontier = [flow.start]
    while frontier:
        following: list[str] = []
        for name in frontier:
            for source, target, _ in flow.edges():
                if source == name and target in flow.nodes and target not in column:
                    column[target] = column[name] + 1
                    following.append(target)
        frontier = following
    last = max(column.values()) + 1
    for name in flow.nodes:
        column.setdefault(name, last)
    return column


def flow_svg(flow: Flow) -> str:
    """The SVG document (a string, every text escaped)."""
    column = _columns(flow)
    rows: dict[int, int] = {}
    position: dict[str, tuple[int, int]] = {}
    for name in flow.nodes:
        col = column[name]
        row = rows.get(col, 0)
        rows[col] = row + 1
        position[name] = (MARGIN + col * (BOX_W + COL_GAP), TOP + row * (BOX_H + ROW_GAP))
    width = MARGIN * 2 + (max(column.values()) + 1) * (BOX_W + COL_GAP) - COL_GAP
    height = TOP + max(rows.values()) * (BOX_H + ROW_GAP) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" '
        'role="img" aria-label="Flow diagram">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#555"/></marker></defs>',
    ]
    if flow.global_transitions:
        listed = ", ".join(f"{t.name} → {t.target}" for t in flow.global_transitions)
        parts.append(
            f'<text x="{MARGIN}" y="16" fill="#555">From any node: {escape(listed)}</text>'
        )
    for source, target, label in flow.edges():
        if target in position:
            parts.append(_edge(position[source], position[target], label))
    for name, node in flow.nodes.items():
        x, y = position[name]
        stroke = "#2e7d32" if name == flow.start else "#447e9b"
        dash = ' stroke-dasharray="4 3"' if node.terminal else ""
        parts.append(
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="#f4f8fa" '
            f'stroke="{stroke}" stroke-width="2"{dash}/>'
        )
        parts.append(
            f'<text x="{x + BOX_W / 2}" y="{y + 20}" text-anchor="middle" font-weight="bold" '
            f'font-size="13">{escape(name)}</text>'
        )
        detail = ", ".join(node.tools) or ("ends the call" if node.terminal else "")
        if detail:
            parts.append(
                f'<text x="{x + BOX_W / 2}" y="{y + 36}" text-anchor="middle" fill="#666">'
                f"{escape(_clip(detail, 24))}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _edge(start: tuple[int, int], end: tuple[int, int], label: str) -> str:
    (x1, y1), (x2, y2) = start, end
    if x2 > x1:  # forward: right side to left side
        ax, ay, bx, by = x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2
        path = f"M{ax},{ay} L{bx},{by}"
        lx, ly = (ax + bx) / 2, (ay + by) / 2 - 4
    else:  # back or within a column: a curve under the boxes
        ax, ay, bx, by = x1 + BOX_W / 2, y1 + BOX_H, x2 + BOX_W / 2, y2 + BOX_H
        depth = max(ay, by) + ROW_GAP * 0.8
        path = f"M{ax},{ay} C{ax},{depth} {bx},{depth} {bx},{by}"
        lx, ly = (ax + bx) / 2, depth - 2
    return (
        f'<path d="{path}" fill="none" stroke="#555" marker-end="url(#arrow)"/>'
        f'<text x="{lx}" y="{ly}" text-anchor="middle" fill="#333" font-size="10">'
        f"{escape(_clip(label, 20))}</text>"
    )


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
