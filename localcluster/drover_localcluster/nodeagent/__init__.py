"""The Drover node agent: a kubelet stand-in that runs pods as host processes.

It registers a Node, keeps its Lease and Ready condition fresh, runs every pod bound to the
node as host processes (the image is neither pulled nor used), reports pod phases and
container states through the API server, and serves container logs to the API server so
`kubectl logs` works.
"""

from drover_localcluster.nodeagent.config import AgentConfig

__all__ = ["AgentConfig"]
