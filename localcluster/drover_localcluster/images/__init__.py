"""Container images without Docker: the project's images built with buildah from Debian
packages (`make images`), published as archives and as the OCI layout the local cluster's
node agent runs pods from."""
