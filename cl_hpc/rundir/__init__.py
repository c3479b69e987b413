"""The run directory: layout (layout.py) and state derivation (state.py), the source of truth of a run."""
