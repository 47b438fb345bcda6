"""Local HTTP servers that speak real provider wire protocols, for driving the real client libraries."""
