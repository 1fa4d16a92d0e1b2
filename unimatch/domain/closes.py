"""The WebSocket close codes of the contract (API.md), in one place: the
socket endpoint closes with them, and code below it (a job that ends a
suspended user's sockets) names them."""

CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_RATE_LIMITED = 4008
