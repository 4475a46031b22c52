"""Results: the Arrow trace (schema, encoder, crash-safe writer) and the figures computed from it."""
