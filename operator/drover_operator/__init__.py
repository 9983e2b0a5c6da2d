"""Drover operator: kopf handlers, Postgres store, admission loop and pod builder."""
