"""The operator's own telemetry: Prometheus metrics and OpenTelemetry traces."""
