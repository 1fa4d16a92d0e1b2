"""The top layer: the node (the one kind of server process), the platform
that starts and stops nodes and the scheduler on Ray, the embedded servers
and the `unimatch` command."""
