"""fal-mcp video pack."""
