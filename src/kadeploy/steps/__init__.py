"""steps room."""
