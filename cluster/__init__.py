"""The engine, backends, model definitions, sharding plans, frontend, traces and CLI."""
