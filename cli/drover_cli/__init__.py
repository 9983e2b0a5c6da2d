"""`drover`, the command line of Drover (also `kubectl drover`, as a kubectl plugin).

It is a client of the operator's application API only, through `drover.Client` (the SDK's
public modules): through the Kubernetes API server with the current kubeconfig context, or
straight to the operator with `--api-url`.
"""
