"""One module per inference engine, each defining one `engines.Engine` subclass (engines._discover imports them)."""
