"""Reusable fakes of third-party edges (the OpenAI API) for tests."""
