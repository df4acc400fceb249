"""The drift report: a self-contained HTML page and a PSI bar chart."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

COLOURS = {"ok": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828"}
BACKGROUNDS = {"ok": "#e8f5e9", "warn": "#fff3e0", "fail": "#ffebee"}

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; }
td.name { text-align: left; }
.status { font-weight: bold; color: white; padding: 0.1em 0.5em; border-radius: 3px; }
details { margin: 0.3em 0; }
"""


def _badge(status: str) -> str:
    return (
        f'<span class="status" style="background:{COLOURS[status]}">'
        f"{html.escape(status)}</span>"
    )


def _share(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _shares_table(item: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class='name'>{html.escape(str(label))}</td><td>{_share(ref)}</td>"
        f"<td>{_share(cur)}</td></tr>"
        for label, ref, cur in zip(
            item["bins"], item["reference_shares"], item["current_shares"], strict=True
        )
    )
    return (
        "<table><tr><th>bin or value</th><th>reference</th><th>current</th></tr>"
        f"{rows}</table>"
    )


def render_html(summary: Mapping[str, Any], title: str) -> str:
    """The drift summary as one HTML page (inline CSS, no scripts): the overall
    status, the score's PSI, a table of features sorted by PSI with status colours,
    and per feature its reference and current shares."""
    score = summary["score"]
    score_psi = "n/a" if score["psi"] is None else f"{score['psi']:.4f}"
    rows = []
    for item in summary["features"]:
        extra = (
            f"unknown {_share(item['unknown_share'])}"
            if "unknown_share" in item
            else f"outside training range {_share(item['clipped_share'])}"
        )
        rows.append(
            f"<tr style='background:{BACKGROUNDS[item['status']]}'>"
            f"<td class='name'>{html.escape(item['feature'])}</td>"
            f"<td class='name'>{html.escape(item['kind'])}</td>"
            f"<td>{item['psi']:.4f}</td><td>{_badge(item['status'])}</td>"
            f"<td class='name'>{extra}</td></tr>"
        )
    details = "".join(
        f"<details><summary>{html.escape(item['feature'])} "
        f"(PSI {item['psi']:.4f}, {html.escape(item['status'])})</summary>"
        f"{_shares_table(item)}</details>"
        for item in summary["features"]
    )
    thresholds = ", ".join(f"{k} {v:g}" for k, v in summary["thresholds"].items())
    named = "".join(
        f"<p>{label}: {html.escape(', '.join(summary[key]))}</p>"
        for key, label in (("failed", "Failed"), ("warned", "Warned"))
        if summary[key]
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Overall status: {_badge(summary["status"])} &middot; {summary["orders"]} orders,
{summary["scored"]} scored &middot; thresholds: {html.escape(thresholds)}</p>
{named}
<h2>Score</h2>
<p>PSI of the scores against the calibration scores: {score_psi}
{_badge(score["status"])}</p>
<h2>Features by PSI</h2>
<table><tr><th>feature</th><th>kind</th><th>PSI</th><th>status</th>
<th>vocabulary / range</th></tr>{"".join(rows)}</table>
<h2>Reference and current shares</h2>
{details}
</body></html>
"""


def psi_figure(summary: Mapping[str, Any]) -> plt.Figure:
    """Horizontal bars of PSI per feature (largest on top), coloured by status, with
    the warn and fail thresholds as vertical lines."""
    features = list(reversed(summary["features"]))
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.3 * len(features) + 1.5)))
    ax.barh(
        [f["feature"] for f in features],
        [f["psi"] for f in features],
        color=[COLOURS[f["status"]] for f in features],
    )
    thresholds = summary["thresholds"]
    ax.axvline(thresholds["psi_warn"], color=COLOURS["warn"], linestyle="--")
    ax.axvline(thresholds["psi_fail"], color=COLOURS["fail"], linestyle="--")
    ax.set_xlabel("PSI against the training reference")
    ax.set_title(f"Feature drift (overall: {summary['status']})")
    fig.tight_layout()
    return fig
