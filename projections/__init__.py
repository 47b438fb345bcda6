"""Read models: one projection per module (tables, handlers, queries); projections/store.py runs them."""
