"""The WebSocket side of the gateway: endpoint, frame codec, socket hub,
per-connection send queues, and the error table for frames and close codes.
Client-facing documentation of every frame: docs/websocket.md."""
