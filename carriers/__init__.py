"""supernet carriers: the simulated super network of operators and aggregators.

It speaks the carrier interconnect (``router.contracts.interconnect``) and reads networks
with the routing core's loaders; it never imports the engine (``router.engine``) or the
tools, and the engine never imports it.
"""
