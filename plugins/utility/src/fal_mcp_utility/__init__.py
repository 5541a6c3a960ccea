"""fal-mcp utility pack."""
