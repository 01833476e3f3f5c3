#!/usr/bin/env python3
"""Draws grafana-dashboard.json as an HTML page, from a real Prometheus.

Not Grafana: a stand-in for a screenshot where Grafana cannot run. It lays
the panels out by their gridPos (24 columns, 30 px a row, as Grafana does),
runs each panel's queries against Prometheus (the dashboard's variables
filled in: $job, $__rate_interval), and draws stat panels as their last
value (with the panel's unit, mappings and threshold colours) and time
series as lines with their legends. Nothing is drawn that Prometheus did not
answer. scripts/dashboard-screenshot runs it and photographs the page.

    render_dashboard.py PROMETHEUS_URL DASHBOARD_JSON OUT_HTML [--minutes N] [--job JOB]
"""
import argparse
import html
import json
import re
import time
import urllib.parse
import urllib.request

COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]
NAMED = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a", "blue": "#5794f2"}
ROW, COL_GAP = 30, 8


def query_range(prom, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def fill(expr, job, rate_interval):
    return expr.replace("$__rate_interval", rate_interval).replace("$job", job)


def legend(fmt, metric):
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in metric.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def fmt_value(v, unit):
    if v is None:
        return "No data"
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "reqps":
        return f"{v:.3g} req/s"
    if unit == "s":
        a = abs(v)
        if a >= 86400:
            return f"{v / 86400:.1f} days"
        if a >= 3600:
            return f"{v / 3600:.1f} h"
        if a >= 1:
            return f"{v:.2f} s"
        if a >= 1e-3:
            return f"{v * 1e3:.2f} ms"
        return f"{v * 1e6:.0f} µs"
    return f"{v:.4g}"


def threshold_color(v, defaults):
    steps = (defaults.get("thresholds") or {}).get("steps") or []
    color = "#73bf69"
    for s in steps:
        if s.get("value") is None or (v is not None and v >= s["value"]):
            color = NAMED.get(s["color"], s["color"])
    return color


def stat(panel, series):
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    last = None
    for s in series:
        values = [float(v) for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
        if values:
            last = values[-1]
            break
    text = fmt_value(last, defaults.get("unit"))
    color = threshold_color(last, defaults) if last is not None else "#8e8e8e"
    for m in defaults.get("mappings", []):
        opt = m.get("options", {})
        key = None if last is None else str(int(last)) if float(last).is_integer() else str(last)
        if key in opt:
            text = opt[key].get("text", text)
            color = NAMED.get(opt[key].get("color"), color)
    return f'<div class="stat" style="color:{color}">{html.escape(text)}</div>'


def timeseries(panel, series_per_target, width, height, start, end):
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    lines = []
    for target, series in series_per_target:
        for s in series:
            points = [(float(t), float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if points:
                lines.append((legend(target.get("legendFormat", ""), s["metric"]), points))
    if not lines:
        return '<div class="nodata">No data</div>'
    top = max(max(v for _, v in pts) for _, pts in lines)
    top = top * 1.1 if top > 0 else 1
    left, bottom = 64, 22
    w, h = width - left - 8, height - bottom - 8
    svg = [f'<svg width="{width}" height="{height}">']
    for i in range(5):
        y = 8 + h - h * i / 4
        svg.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        svg.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{html.escape(fmt_value(top * i / 4, unit))}</text>')
    for i in range(6):
        t = start + (end - start) * i / 5
        x = left + w * i / 5
        svg.append(f'<text x="{x:.1f}" y="{height - 4}" class="axis" text-anchor="middle">{time.strftime("%H:%M", time.gmtime(t))}</text>')
    for n, (_, pts) in enumerate(lines):
        coords = " ".join(f"{left + w * (t - start) / (end - start):.1f},{8 + h - h * v / top:.1f}" for t, v in pts)
        svg.append(f'<polyline points="{coords}" fill="none" stroke="{COLORS[n % len(COLORS)]}" stroke-width="1.5"/>')
    svg.append("</svg>")
    legends = "".join(
        f'<span class="lg"><i style="background:{COLORS[n % len(COLORS)]}"></i>{html.escape(name)}</span>'
        for n, (name, _) in enumerate(lines)
    )
    return "".join(svg) + f'<div class="legend">{legends}</div>'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prometheus")
    ap.add_argument("dashboard")
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--job", default="gatehouse")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    dash = json.load(open(a.dashboard))
    end = time.time()
    start = end - a.minutes * 60
    step = max(2, int(a.minutes * 60 / 240))
    col = (a.width - 16) / 24
    cells, bottom = [], 0
    for p in dash["panels"]:
        g = p["gridPos"]
        x, y, w, h = g["x"] * col + 8, g["y"] * ROW + 56, g["w"] * col - COL_GAP, g["h"] * ROW - COL_GAP
        bottom = max(bottom, y + h)
        results = [(t, query_range(a.prometheus, fill(t["expr"], a.job, "1m"), start, end, step)) for t in p["targets"]]
        if p["type"] == "stat":
            body = stat(p, [s for _, series in results for s in series])
        else:
            body = timeseries(p, results, int(w) - 16, int(h) - 56, start, end)
        cells.append(
            f'<div class="panel" style="left:{x:.0f}px;top:{y:.0f}px;width:{w:.0f}px;height:{h:.0f}px">'
            f'<div class="title">{html.escape(p["title"])}</div>{body}</div>'
        )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin:0; background:#111217; color:#ccccdc; font:13px/1.3 Inter,system-ui,sans-serif; }}
.top {{ height:40px; display:flex; align-items:center; gap:16px; padding:0 16px; border-bottom:1px solid #2c2e33; }}
.top b {{ font-size:16px; color:#fff; }} .top span {{ color:#8e8e8e; }}
.panel {{ position:absolute; background:#181b1f; border:1px solid #2c2e33; border-radius:2px; padding:8px; box-sizing:border-box; overflow:hidden; }}
.title {{ font-weight:500; color:#ccccdc; margin-bottom:6px; }}
.stat {{ font-size:30px; font-weight:500; text-align:center; margin-top:10px; }}
.nodata {{ color:#8e8e8e; text-align:center; margin-top:40px; }}
.grid {{ stroke:#2c2e33; }} .axis {{ fill:#8e8e8e; font-size:10px; }}
.legend {{ font-size:11px; }} .lg {{ margin-right:12px; white-space:nowrap; }}
.lg i {{ display:inline-block; width:12px; height:3px; margin-right:4px; vertical-align:middle; }}
</style></head><body>
<div class="top"><b>{html.escape(dash["title"])}</b><span>job = {html.escape(a.job)}</span>
<span>last {a.minutes:g} minutes · drawn from grafana-dashboard.json and a live Prometheus by render_dashboard.py (not Grafana){html.escape(" · " + a.note if a.note else "")}</span></div>
{''.join(cells)}
<div style="position:absolute;top:{bottom + 8:.0f}px;height:1px;width:1px"></div>
</body></html>"""
    open(a.out, "w").write(page)
    print(int(bottom + 16))


if __name__ == "__main__":
    main()
