"""The operator's HTTP API: the run API that runners call, health, readiness and metrics.
Served by every replica; stateless (everything lives in Postgres)."""
