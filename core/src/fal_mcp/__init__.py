"""fal-mcp core."""
