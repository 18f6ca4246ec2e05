"""Turning the three sides' result dicts into the table, the PASS/FAIL targets and JSON.

A missing side (not run, or failed) shows "—" and its targets "n/a", so a references-only
run still prints a complete table. Edge's search figure is its best of one-query-per-call
and one batch call, with the recall of that same mode.
"""

from __future__ import annotations

from dataclasses import dataclass

# The targets, as numbers.
SEARCH_RATIO_MIN = 0.8
SEARCH_RECALL_SLACK = 0.01
INGEST_RATIO_MIN = 1.0
FILTER_RECALL_MIN = 0.95
FILTER_RATIO_MIN = 0.5
P50_MAX_MS = 2.0


@dataclass
class Row:
    metric: str
    shoal: float | None = None
    edge: float | None = None
    hnswlib: float | None = None
    recall_shoal: float | None = None
    recall_edge: float | None = None
    recall_hnswlib: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.shoal is None or not self.edge:
            return None
        return self.shoal / self.edge

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "shoal": self.shoal,
            "edge": self.edge,
            "hnswlib": self.hnswlib,
            "shoal_over_edge": self.ratio,
            "recall_at_10": {"shoal": self.recall_shoal, "edge": self.recall_edge, "hnswlib": self.recall_hnswlib},
        }


def _get(d: dict | None, *path):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _edge_best_recall(search: dict | None) -> float | None:
    if not search:
        return None
    return search["batch_recall"] if search.get("best") == "batch" else search["recall"]


def build_rows(results: dict, cfg) -> list[Row]:
    s, e, h = results.get("shoal"), results.get("edge"), results.get("hnswlib")
    rows = [
        Row(
            "ingest to searchable index (points/s)",
            _get(s, "ingest", "points_per_s"),
            _get(e, "ingest", "points_per_s"),
            _get(h, "ingest", "points_per_s"),
        )
    ]
    for conc in cfg.concurrencies:
        rows.append(
            Row(
                f"search qps: Shoal {conc} clients | Edge, hnswlib best",
                _get(s, "search", "concurrency", str(conc), "qps"),
                _get(e, "search", "best_qps"),
                _get(h, "search", "best_qps"),
                _get(s, "search", "recall"),
                _edge_best_recall(_get(e, "search")),
                _edge_best_recall(_get(h, "search")),
            )
        )
    rows.append(
        Row(
            "search qps: one query per call (in-process)",
            None,
            _get(e, "search", "loop", "qps"),
            _get(h, "search", "loop", "qps"),
            None,
            _get(e, "search", "recall"),
            _get(h, "search", "recall"),
        )
    )
    rows.append(
        Row(
            "search qps: all queries in one batch call",
            None,
            _get(e, "search", "batch", "qps"),
            _get(h, "search", "batch", "qps"),
            None,
            _get(e, "search", "batch_recall"),
            _get(h, "search", "batch_recall"),
        )
    )
    for pct in ("p50", "p99"):
        rows.append(
            Row(
                f"single-client latency {pct} (ms)",
                _get(s, "search", "latency", f"{pct}_ms"),
                _get(e, "search", "latency", f"{pct}_ms"),
                _get(h, "search", "latency", f"{pct}_ms"),
            )
        )
    for value in cfg.filters:
        sel = _get(e, "filtered", value, "selectivity") or _get(s, "filtered", value, "selectivity")
        label = f"filtered qps pos={value}" + (f" ({sel * 100:.1f} %)" if sel is not None else "")
        rows.append(
            Row(
                label,
                _get(s, "filtered", value, "qps"),
                _get(e, "filtered", value, "best_qps"),
                None,
                _get(s, "filtered", value, "recall"),
                _get(e, "filtered", value, "recall"),
            )
        )
    rows.append(
        Row(
            "resident memory RSS (MiB)",
            _get(s, "memory", "rss_mib"),
            _get(e, "memory", "process_rss_mib"),
            _get(h, "memory", "process_rss_mib"),
        )
    )
    rows.append(
        Row(
            "resident memory PSS (MiB)",
            _get(s, "memory", "pss_mib"),
            _get(e, "memory", "process_pss_mib"),
            _get(h, "memory", "process_pss_mib"),
        )
    )
    return rows


def targets(results: dict, cfg) -> list[dict]:
    """The issue's PASS/FAIL targets; "n/a" when a side needed for one is missing."""
    s, e = results.get("shoal"), results.get("edge")
    out = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        out.append({"target": name, "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"), "detail": detail})

    top = str(max(cfg.concurrencies))
    sq, eq = _get(s, "search", "concurrency", top, "qps"), _get(e, "search", "best_qps")
    sr, er = _get(s, "search", "recall"), _edge_best_recall(_get(e, "search"))
    if None in (sq, eq, sr, er):
        add(f"search qps @{top} clients >= {SEARCH_RATIO_MIN}x Edge best, recall within {SEARCH_RECALL_SLACK}", None, "needs Shoal and Edge")
    else:
        add(
            f"search qps @{top} clients >= {SEARCH_RATIO_MIN}x Edge best, recall within {SEARCH_RECALL_SLACK}",
            sq >= SEARCH_RATIO_MIN * eq and sr >= er - SEARCH_RECALL_SLACK,
            f"{sq:.0f} vs {eq:.0f} qps ({sq / eq:.2f}x); recall {sr:.4f} vs {er:.4f}",
        )
    si, ei = _get(s, "ingest", "points_per_s"), _get(e, "ingest", "points_per_s")
    if None in (si, ei):
        add(f"ingestion >= {INGEST_RATIO_MIN}x Edge", None, "needs Shoal and Edge")
    else:
        add(f"ingestion >= {INGEST_RATIO_MIN}x Edge", si >= INGEST_RATIO_MIN * ei, f"{si:.0f} vs {ei:.0f} points/s ({si / ei:.2f}x)")
    for value in cfg.filters:
        fq, fe = _get(s, "filtered", value, "qps"), _get(e, "filtered", value, "best_qps")
        fr = _get(s, "filtered", value, "recall")
        name = f"filter pos={value}: recall >= {FILTER_RECALL_MIN} and qps >= {FILTER_RATIO_MIN}x Edge"
        if None in (fq, fe, fr):
            add(name, None, "needs Shoal and Edge")
        else:
            add(name, fr >= FILTER_RECALL_MIN and fq >= FILTER_RATIO_MIN * fe, f"recall {fr:.4f}; {fq:.0f} vs {fe:.0f} qps ({fq / fe:.2f}x)")
    p50 = _get(s, "search", "latency", "p50_ms")
    name = f"single-client p50 <= {P50_MAX_MS} ms"
    add(name, None if p50 is None else p50 <= P50_MAX_MS, "needs Shoal" if p50 is None else f"{p50:.3f} ms")
    return out


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    if digits == 0 and abs(x) < 100:
        digits = 2
    return f"{x:,.{digits}f}"


def _fmt_recall(r: Row) -> str:
    vals = [r.recall_shoal, r.recall_edge, r.recall_hnswlib]
    if all(v is None for v in vals):
        return ""
    return " / ".join("—" if v is None else f"{v:.4f}" for v in vals)


def render(rows: list[Row], tgts: list[dict]) -> str:
    header = ["metric", "Shoal", "Edge", "hnswlib", "Shoal/Edge", "recall@10 S / E / h"]
    table = [header] + [
        [r.metric, _fmt(r.shoal), _fmt(r.edge), _fmt(r.hnswlib), _fmt(r.ratio, 2), _fmt_recall(r)] for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append(" | ".join(cells))
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines.append("")
    lines.append("targets:")
    for t in tgts:
        lines.append(f"  [{t['result']:>4}] {t['target']}: {t['detail']}")
    return "\n".join(lines)
