"""The run lifecycle in motion: what the kopf handlers and the API feed in, and the loops
(reconcile, schedules, history) that decide through the store and then act through the
converger."""
