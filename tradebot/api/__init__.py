"""API v1 plumbing shared by the apps' api/ modules: auth, permissions, pagination caps, throttles, health, schema."""
