"""keyguard fix: rewrite hardcoded keys to read the environment, store the values safely."""
