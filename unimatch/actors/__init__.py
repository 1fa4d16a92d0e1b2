"""The virtual-actor runtime, Orleans-grain style, on Ray.

A virtual actor (`base.VirtualActor`) is a small object with a serial mailbox,
activated on first use inside one of a fixed set of shard-host Ray actors
(`host.ShardHost`), chosen by rendezvous hashing of its kind and id
(`routing.pick_host`), and passivated when idle. Callers reach any virtual
actor through an `directory.ActorDirectory`, which batches the calls bound for
one host within an event-loop tick into one Ray call (`batching.TickBatcher`)
and retries them while a host is being restarted by Ray.
"""
