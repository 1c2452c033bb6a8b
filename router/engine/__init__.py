"""The engine: the worker shell around the routing core.

A message's life (``pipeline``, one module per stage): consumed from Kafka (``consumer``,
``kafka``; ``worker`` assembles the process), decoded and checked
(``router.contracts.wire``), routed (``router.core``), written ahead in the attempts log
(``attempts``, ``sink``), submitted through a carrier transport (``transports``), and
closed by a receipt written to Kafka (``sink``) before its offset is committed
(``offsets``).
``fleet`` runs several workers, ``settings`` holds their options, ``metrics`` their
Prometheus series.

The engine never imports the simulator (``carriers``) or the tools (``router.tools``).
"""
