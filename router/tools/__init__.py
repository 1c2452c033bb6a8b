"""Tools around the engine: the load generator, the demo, the economics run, ``explain`` and
the local brokers (``infra``). They may import every room below them; nothing in the engine
imports them."""
