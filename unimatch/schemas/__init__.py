"""The contract's one source: every request body, query, response and
WebSocket frame declared once as a pydantic model, with the limits and text
rules they share. The bottom of the dependency stack: it imports nothing of
unimatch but `unimatch.domain.errors`. `http/validation.py` validates requests with
these models and `http/openapi.py` builds the OpenAPI document from them.
"""
