"""The in-memory bus: routing, subscribers, middleware, threads."""
