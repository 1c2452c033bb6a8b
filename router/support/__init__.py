"""Plumbing every room may use: logging set-up, argument types, process running, where the
local brokers listen. Imports nothing else from the project."""
