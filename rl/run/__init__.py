"""Setting up and keeping a run: the Ray placement, the session, the run directory, resuming."""
