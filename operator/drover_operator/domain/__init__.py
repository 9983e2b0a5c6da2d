"""The operator's rules, as pure code: what a pod's status means, who gets a slot, what a
failed attempt leads to, what a schedule does at a tick, what status shows, how pods are
built. Nothing here talks to Postgres or Kubernetes; the store and the converger call it."""
