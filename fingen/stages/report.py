"""Stage ``report``: a self-contained HTML report of the run so far (``report.html``)."""

from __future__ import annotations

from pydantic import Field

from fingen.report import write_report
from fingen.stages.base import StageContext, StageParams, stage

__all__ = ["ReportParams", "report"]


class ReportParams(StageParams):
    out: str = Field("report.html", description="path of the page inside the run directory")


@stage(ReportParams)
def report(ctx: StageContext, params: ReportParams) -> None:
    """Write the run report (stages, counts, charts, sample queries and reasoning).

    Example: ``{stage: report, params: {out: report.html}}``
    """
    path = ctx.store.path(params.out)  # refuses a path outside the run directory
    written = write_report(ctx.run_dir, path.relative_to(ctx.run_dir.resolve()).as_posix())
    ctx.stats.inputs = ctx.stats.succeeded = 1
    ctx.stats.extra.update(report=params.out, bytes=written.stat().st_size)
