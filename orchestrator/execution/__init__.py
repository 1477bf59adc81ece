"""Execution on Ray: one sweep run, the actor pool, the long-lived worker, progress."""
