"""Reliability and security promises of docs/reliability.md, one test module per promise."""
