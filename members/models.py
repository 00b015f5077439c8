"""Organisations and their signing keys: built by the members issue."""
