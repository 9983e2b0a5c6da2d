"""The Drover node agent: a kubelet stand-in.

It registers a Node, keeps its Lease and Ready condition fresh, runs every pod bound to the
node — inside its image when the image is in the node's local store, as host processes
otherwise (images are never pulled) — reports pod phases and container states through the
API server, and serves container logs to the API server so `kubectl logs` works.
"""

from drover_localcluster.nodeagent.config import AgentConfig

__all__ = ["AgentConfig"]
