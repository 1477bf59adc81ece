"""Plans, schedules, stores and reports sweeps. The only package that imports Ray."""

__all__: list[str] = []
