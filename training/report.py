"""The training report: one self-contained HTML page a data scientist can open.

ROC curve and calibration (against the current champion on the same held-out rows when
its features are the same), feature importance, the manifest's metrics and data range.
Plots are inline SVG: no JavaScript, no network, nothing to install.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from decisioning.policy.scoring import ModelManifest
from training.metrics import calibration, roc_curve

__all__ = ["Curve", "render"]

W, H, PAD = 360, 300, 40
COLORS = ("#1f6feb", "#d1242f")


@dataclass(frozen=True, slots=True)
class Curve:
    """Held-out predictions of one model (the new one, or the champion)."""

    label: str
    y: np.ndarray
    p: np.ndarray


def _xy(x: float, y: float) -> str:
    return f"{PAD + x * (W - 2 * PAD):.1f},{H - PAD - y * (H - 2 * PAD):.1f}"


def _frame(title: str, xlabel: str, ylabel: str, body: str) -> str:
    axes = (
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#444"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#444"/>'
        f'<polyline points="{_xy(0, 0)} {_xy(1, 1)}" fill="none" stroke="#bbb" '
        'stroke-dasharray="4"/>'
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{xlabel}</text>'
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" '
        f'text-anchor="middle">{ylabel}</text>'
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>'
    )
    return f'<svg width="{W}" height="{H}" font-size="12">{axes}{body}</svg>'


def _legend(curves: Sequence[Curve]) -> str:
    return "".join(
        f'<text x="{W - PAD - 150}" y="{PAD + 16 + 16 * i}" fill="{COLORS[i]}">'
        f"{html.escape(c.label)}</text>"
        for i, c in enumerate(curves)
    )


def _roc(curves: Sequence[Curve]) -> str:
    lines = ""
    for i, c in enumerate(curves):
        fpr, tpr = roc_curve(c.y, c.p)
        pts = " ".join(_xy(a, b) for a, b in zip(fpr, tpr, strict=True))
        lines += f'<polyline points="{pts}" fill="none" stroke="{COLORS[i]}" stroke-width="2"/>'
    return _frame(
        "ROC (held out)", "false positive rate", "true positive rate", lines + _legend(curves)
    )


def _calibration(curves: Sequence[Curve]) -> str:
    top = max(max(float(np.max(c.p)), float(np.mean(c.y)) * 2) for c in curves) or 1.0
    body = ""
    for i, c in enumerate(curves):
        for b in calibration(c.y, c.p):
            body += (
                f'<circle cx="{_xy(b["mean_p"] / top, 0).split(",")[0]}" '
                f'cy="{_xy(0, min(b["rate"] / top, 1)).split(",")[1]}" r="4" '
                f'fill="{COLORS[i]}"/>'
            )
    title = f"Calibration by decile (axes 0–{top:.2f})"
    return _frame(title, "mean prediction", "observed rate", body + _legend(curves))


def _importance(features: Sequence[str], gain: Sequence[float]) -> str:
    pairs = sorted(zip(gain, features, strict=True), reverse=True)[:20]
    top = max((g for g, _ in pairs), default=1.0) or 1.0
    rows = 22 * len(pairs) + 30
    bars = "".join(
        f'<text x="150" y="{30 + 22 * i + 12}" text-anchor="end">{html.escape(f)}</text>'
        f'<rect x="156" y="{30 + 22 * i}" width="{300 * g / top:.1f}" height="16" '
        f'fill="{COLORS[0]}"/>'
        f'<text x="{160 + 300 * g / top:.1f}" y="{30 + 22 * i + 12}">{g:.0f}</text>'
        for i, (g, f) in enumerate(pairs)
    )
    title = '<text x="230" y="18" text-anchor="middle" font-weight="bold">'
    title += "Feature importance (gain)</text>"
    return f'<svg width="520" height="{rows}" font-size="12">{title}{bars}</svg>'


def render(
    manifest: ModelManifest,
    curves: Sequence[Curve],
    gain: Sequence[float],
    champion: dict[str, Any] | None,
) -> str:
    """The report page for `manifest`; `curves[0]` is the new model."""
    m = manifest.metrics
    rows = [("", manifest.ref, champion["version"] if champion else "(no comparable champion)")]
    for key in ("auc", "logloss", "base_rate"):
        rows.append((key, f"{m.get(key)}", f"{champion.get(key)}" if champion else ""))
    table = "".join(
        f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
        for a, b, c in rows
    )
    per_action = "".join(
        f"<tr><td>{html.escape(a)}</td><td>{v}</td></tr>"
        for a, v in sorted((m.get("auc_by_action") or {}).items())
    )
    training = html.escape(json.dumps(manifest.training, indent=2, sort_keys=True, default=str))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(manifest.ref)} training report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;
text-align:left}}svg{{margin:0.5em;border:1px solid #eee}}pre{{background:#f6f8fa;padding:1em}}
</style></head><body>
<h1>{html.escape(manifest.ref)}</h1>
<p>{len(manifest.features)} features, sha256 <code>{manifest.sha256[:16]}…</code>,
created {html.escape(manifest.created_at or "")} by {html.escape(manifest.created_by or "")}.</p>
<h2>New model vs champion (same held-out rows)</h2><table>{table}</table>
<div>{_roc(curves)}{_calibration(curves)}</div>
<h2>Feature importance</h2>{_importance(manifest.features, gain)}
<h2>AUC per action</h2><table><tr><th>action</th><th>AUC</th></tr>{per_action}</table>
<h2>Training</h2><pre>{training}</pre>
</body></html>
"""
