"""Example data shipped with supernet."""
