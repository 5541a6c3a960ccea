# fal-mcp's test fixtures: fal_sandbox, fal_tools, fal_registry, anyio_backend, and no real fal key.
pytest_plugins = ["fal_mcp_sandbox.testing"]
