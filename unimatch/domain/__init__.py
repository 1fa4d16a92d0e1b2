"""The bottom layer: rules and settings every other layer shares.

Errors, configuration, metrics, pair ids, tokens, passwords and media rules
import nothing of the rest of the package, so storage, actors, transport and
the node can all depend on them.
"""
