"""One module per `splitsweep` command (see orchestrator.cli.COMMANDS)."""
