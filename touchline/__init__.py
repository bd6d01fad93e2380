"""Touchline the application: the command line, the embedded stack and the demo, above the
services; the only package that knows every service."""
