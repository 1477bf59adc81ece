"""Reports: per-configuration metrics, intervals, BD-rate, Pareto fronts, tables and figures."""
