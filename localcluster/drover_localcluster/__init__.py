"""A real local Kubernetes cluster for development and tests, without a container runtime.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are built from their Go
modules and run as local processes; the Drover node agent registers a Node and runs the
pods bound to it inside their images (`drover_localcluster.images` builds those) or as host
processes; Postgres is a throwaway cluster from Debian's packages. Entry points:
`drover_localcluster.cluster.LocalCluster` and `python -m drover_localcluster`.
"""
