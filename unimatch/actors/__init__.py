"""The virtual-actor runtime, Orleans-grain style, on Ray.

A virtual actor (`base.VirtualActor`) is a small object with a serial,
bounded mailbox, activated on first use in the node chosen by rendezvous
hashing of its kind and id (`routing.pick_host`), and passivated when idle
(`host.ActorHost`). Callers reach any virtual actor through one
`directory.ActorDirectory`, whose link per node (`links`) is in-process for
the caller's own node and a tick-batched Ray call for another. Actors reach
sockets through the `ports.SocketPort` the node gives them.
"""
