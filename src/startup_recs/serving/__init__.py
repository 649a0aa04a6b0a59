"""Online serving core: retrieval, routing, ranking, request rules and hot reload (no KServe here)."""
