"""Planning: the sweep spec, task ids, the plan of tasks and work units, model variants, cut sizes, search."""
