"""Protocols spoken through their ecosystem's client library, one module each (``engine.Adapter``)."""
