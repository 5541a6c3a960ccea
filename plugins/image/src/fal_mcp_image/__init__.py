"""fal-mcp image pack."""
