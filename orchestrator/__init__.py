"""Plans, schedules, stores and reports sweeps. The only package that imports Ray.

The stages are subpackages: ``planning`` (spec → tasks → work units, variants),
``data`` (datasets, demo assets), ``execution`` (Ray), ``results`` (the store) and
``reporting`` (metrics, intervals, BD-rate, tables, figures). The CLI, the dashboard
and the benchmarks use the names below; importing this package imports none of the
stages (Ray loads only when a sweep runs).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["load_spec", "build_plan", "run_sweep", "build_report", "open_results"]

_HOMES = {
    "load_spec": "orchestrator.planning.spec",
    "build_plan": "orchestrator.planning.plan",
    "run_sweep": "orchestrator.execution.sweep",
    "build_report": "orchestrator.reporting.report",
    "open_results": "orchestrator.results.reading",
}

if TYPE_CHECKING:
    from orchestrator.execution.sweep import run_sweep
    from orchestrator.planning.plan import build_plan
    from orchestrator.planning.spec import load_spec
    from orchestrator.reporting.report import build_report
    from orchestrator.results.reading import open_results


def __getattr__(name: str) -> Any:
    # Lazy: `import orchestrator` stays cheap and free of Ray until a stage is used.
    if name in _HOMES:
        value = getattr(import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
