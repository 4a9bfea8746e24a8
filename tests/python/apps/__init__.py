"""Fixture WSGI applications that the integration tests run in a real server process."""
