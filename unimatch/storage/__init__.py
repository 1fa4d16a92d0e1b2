"""PostgreSQL (the truth) and Redis (the cache)."""
