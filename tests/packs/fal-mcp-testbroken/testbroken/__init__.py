"""A pack that fails at import."""

raise ImportError("testbroken needs a module that is not installed")
