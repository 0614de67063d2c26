"""Integrations with other servers and frameworks; each module is optional."""
