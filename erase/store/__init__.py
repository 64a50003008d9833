"""The facility store: audit events, batches, jobs, records and certificate references,
in one station's audit.sqlite (the default) or in a facility's PostgreSQL."""
