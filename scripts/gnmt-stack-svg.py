#!/usr/bin/env python3
"""Draws docs/gnmt-stack.svg: the GNMT encoder and decoder stacks with the residual "bus".

Each LSTM layer is a box; from layer 3 up a residual connection adds the layer's input to its
output (the circled +), so an identity path runs up the side of each stack past every layer.
Run: python3 scripts/gnmt-stack-svg.py > docs/gnmt-stack.svg
"""

W, H = 980, 830
BOX_W, BOX_H, GAP = 190, 44, 22
out = []


def el(s):
    out.append(s)


def text(x, y, s, size=14, anchor="middle", weight="normal", color="#222"):
    el(f'<text x="{x}" y="{y}" font-family="DejaVu Sans, Arial, sans-serif" font-size="{size}" '
       f'text-anchor="{anchor}" font-weight="{weight}" fill="{color}">{s}</text>')


def box(x, y, label, fill):
    el(f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" stroke="#333" stroke-width="1.5"/>')
    text(x + BOX_W / 2, y + BOX_H / 2 + 5, label)


def arrow(x1, y1, x2, y2, color="#333", width=1.6, dash=None):
    d = f' stroke-dasharray="{dash}"' if dash else ""
    el(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{color}" stroke-width="{width}"{d} marker-end="url(#a)"/>')


def plus(cx, cy):
    el(f'<circle cx="{cx}" cy="{cy}" r="10" fill="#fff" stroke="#c0392b" stroke-width="2"/>')
    el(f'<line x1="{cx-6}" y1="{cy}" x2="{cx+6}" y2="{cy}" stroke="#c0392b" stroke-width="2"/>')
    el(f'<line x1="{cx}" y1="{cy-6}" x2="{cx}" y2="{cy+6}" stroke="#c0392b" stroke-width="2"/>')


el(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">')
el('<defs><marker id="a" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
   '<path d="M0,0 L10,4 L0,8 z" fill="#333"/></marker>'
   '<marker id="r" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
   '<path d="M0,0 L10,4 L0,8 z" fill="#c0392b"/></marker></defs>')
el(f'<rect width="{W}" height="{H}" fill="#fff"/>')
text(W / 2, 30, "GNMT: 8-layer LSTM encoder and decoder with residual connections from layer 3", 18, weight="bold")

layers = 8
top = 150
step = BOX_H + GAP


def y_of(i):  # layer i (1 = bottom) -> top y of its box
    return top + (layers - i) * step


# Encoder.
ex = 110
text(ex + BOX_W / 2, top - 88, "encoder", 16, weight="bold")
for i in range(1, layers + 1):
    y = y_of(i)
    if i == 1:
        half = BOX_W / 2 - 4
        el(f'<rect x="{ex}" y="{y}" width="{half}" height="{BOX_H}" rx="8" fill="#d6eaf8" stroke="#333" stroke-width="1.5"/>')
        el(f'<rect x="{ex + half + 8}" y="{y}" width="{half}" height="{BOX_H}" rx="8" fill="#d6eaf8" stroke="#333" stroke-width="1.5"/>')
        text(ex + half / 2, y + 27, "LSTM →", 13)
        text(ex + half + 8 + half / 2, y + 27, "← LSTM", 13)
        text(ex - 12, y + 27, "1", 13, anchor="end", color="#555")
    else:
        box(ex, y, "LSTM", "#d6eaf8")
        text(ex - 12, y + 27, str(i), 13, anchor="end", color="#555")
    if i < layers:
        # Main path: output of layer i up into layer i+1 (through the + when i+1 >= 3 adds... below).
        arrow(ex + BOX_W / 2, y, ex + BOX_W / 2, y_of(i + 1) + BOX_H + 1)
# Source embeddings.
ey = y_of(1) + BOX_H + 44
box(ex, ey, "source embeddings", "#eeeeee")
arrow(ex + BOX_W / 4, ey, ex + BOX_W / 4, y_of(1) + BOX_H + 1)
arrow(ex + 3 * BOX_W / 4, ey, ex + 3 * BOX_W / 4, y_of(1) + BOX_H + 1)
text(ex + BOX_W + 10, y_of(1) + BOX_H + 20, "concat (2 × width)", 11, anchor="start", color="#555")

def skips(x_mid, x_side):
    """For each layer from 3 up: its input, taken below the box, skips the LSTM and is added to
    its output above the box. Chained, the skips form the identity path (the bus)."""
    for i in range(3, layers + 1):
        y_in = y_of(i) + BOX_H + GAP / 2
        y_out = y_of(i) - GAP / 2
        el(f'<circle cx="{x_mid}" cy="{y_in}" r="3" fill="#c0392b"/>')
        side = -10 if x_side < x_mid else 10
        el(f'<path d="M{x_mid},{y_in} L{x_side},{y_in} L{x_side},{y_out} L{x_mid + side},{y_out}" fill="none" '
           f'stroke="#c0392b" stroke-width="2.5" marker-end="url(#r)"/>')
        plus(x_mid, y_out)


# The residual skips on the encoder's left.
bx = ex - 30
skips(ex + BOX_W / 2, bx)
text(bx - 10, y_of(5) + 10, "residual", 12, anchor="end", color="#c0392b")
text(bx - 10, y_of(5) + 26, "skips", 12, anchor="end", color="#c0392b")

# Decoder.
dx = 640
text(dx + BOX_W / 2, top - 88, "decoder", 16, weight="bold")
for i in range(1, layers + 1):
    y = y_of(i)
    box(dx, y, "LSTM" if i > 1 else "LSTM (queries attention)", "#d5f5e3")
    text(dx + BOX_W + 60, y + 27, str(i), 13, anchor="start", color="#555")
    if i < layers:
        arrow(dx + BOX_W / 2, y, dx + BOX_W / 2, y_of(i + 1) + BOX_H + 1)
dy = y_of(1) + BOX_H + 44
box(dx, dy, "target embeddings", "#eeeeee")
arrow(dx + BOX_W / 2, dy, dx + BOX_W / 2, y_of(1) + BOX_H + 1)
skips(dx + BOX_W / 2, dx + BOX_W + 40)
# Softmax on top.
sy = y_of(layers) - 76
box(dx, sy, "softmax over the shared vocabulary", "#fdebd0")
arrow(dx + BOX_W / 2, y_of(layers), dx + BOX_W / 2, sy + BOX_H + 1)

# Attention.
ax, ay = 395, y_of(4)
el(f'<rect x="{ax}" y="{ay}" width="170" height="70" rx="10" fill="#fcf3cf" stroke="#333" stroke-width="1.5"/>')
text(ax + 85, ay + 30, "attention", 15, weight="bold")
text(ax + 85, ay + 50, "(normalized Bahdanau)", 12)
arrow(ex + BOX_W, y_of(layers) + BOX_H / 2, ax, ay + 20)
text(ex + BOX_W + 50, y_of(layers) - 4, "top encoder outputs", 12, anchor="start", color="#555")
arrow(dx, y_of(1) + BOX_H / 2, ax + 170, ay + 60, dash="5,4")
text(dx - 8, y_of(1) - 4, "query: layer 1", 12, anchor="end", color="#555")
for i in range(2, layers + 1):
    arrow(ax + 170, ay + 35, dx, y_of(i) + BOX_H / 2, color="#b7950b", width=1.0)
text(ax + 85, ay - 12, "context → every layer above 1", 12, color="#b7950b")

text(W / 2, H - 36, "Red: the identity path. Layer i ≥ 3 computes y = LSTM(x) + x; chained, the skips carry "
     "signals up and gradients down past every non-linearity.", 13, color="#c0392b")
text(W / 2, H - 16, "Layers 1-2 have none: the bidirectional bottom layer's output is twice as wide as the "
     "layers above it.", 13, color="#555")
el('</svg>')
print("\n".join(out))
