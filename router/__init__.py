"""supernet router: the engine and everything around it, in rooms that import downwards.

``cli`` (the ``supernet`` command) > ``tools`` (load, demo, economics, explain, infra) >
``engine`` (the worker shell; ``engine.pipeline`` is a message's whole life) > ``core`` (the
pure routing core; ``core.decision.Router.decide`` is the hot path) > ``contracts`` (every
format that crosses a process boundary, and the code registry) > ``support`` (plumbing).
The simulated carriers (the top-level ``carriers`` package) sit beside the engine.
"""
