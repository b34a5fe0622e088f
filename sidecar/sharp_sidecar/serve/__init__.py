"""`sharp serve`: the JSON-lines protocol server and its jobs (stdin/stdout only, no network port)."""
