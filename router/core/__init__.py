"""The routing core: plain data in, a routing decision out. No await, no I/O, no globals.

The shell around it (the worker, ``supernet explain``) loads a network directory with
``router.core.network.load_network``, builds a ``Router`` and calls ``Router.decide``
for every message, feeding delivery reports and carrier status into ``Router.health``.
"""

from __future__ import annotations
