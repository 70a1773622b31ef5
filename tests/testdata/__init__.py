"""Golden payloads shared by the tests."""
