"""Run reports: read a run directory into a typed summary and render it as one HTML page.

Example::

    from fingen.report import write_report
    path = write_report("outputs/demo/20250101-120000")   # -> .../report.html
"""

from __future__ import annotations

from fingen.report.collect import RunData, RunSummary, load_run, summarize
from fingen.report.html import render_report, write_report

__all__ = ["RunData", "RunSummary", "load_run", "render_report", "summarize", "write_report"]
