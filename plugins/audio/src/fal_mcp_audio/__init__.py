"""fal-mcp audio pack."""
