"""Carrier transports: how a submit reaches a carrier and its results and reports come back.

``base`` says what the engine needs from a transport (``Transport``, the ``Submitter`` the
pipeline submits into) and what a transport calls back (``TransportHandler``). ``mqtt``
(the simulated super network's interconnect) is the first implementation; an SMPP or HTTP
carrier transport would be a module beside it, implementing the same protocols.
"""
