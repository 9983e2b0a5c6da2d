"""Drover SDK: durable background tasks for Python teams on Kubernetes.

Task code imports this package; it stays light because it goes into users' images.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
