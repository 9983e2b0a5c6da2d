"""Postgres: the durable record of runs, attempts and their history."""
