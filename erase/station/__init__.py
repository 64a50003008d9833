"""Station mode: many phones at once, hot-plug, batches, reconciliation, batch reports."""
