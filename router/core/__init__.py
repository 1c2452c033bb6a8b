"""The routing core: plain data in, a routing decision out. No await, no I/O, no globals.

The shell around it (the worker, ``supernet explain``) loads a network directory with
``router.core.network.load_network``, builds a ``Router`` (``decision``; optionally with
a ``policy.Policy``, the default ``policy.ExpectedCost``) and calls ``Router.decide`` for
every message, feeding delivery reports and carrier status into ``Router.health``.
``types`` holds the value types every module shares (a leaf: it imports nothing from the
core); ``validation`` the stateless checks every caller of the core shares; ``deck`` the
one rate deck reader.
"""

from __future__ import annotations
