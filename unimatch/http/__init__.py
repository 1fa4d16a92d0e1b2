"""The REST shell: app factory, middleware, handlers, the gateway actor."""
