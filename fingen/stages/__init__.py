"""Pipeline stages: thin adapters from run-directory files to the library's methods."""

from __future__ import annotations

from fingen.stages.base import Progress, StageContext, StageParams, StageStats, stage

__all__ = ["Progress", "StageContext", "StageParams", "StageStats", "stage"]
