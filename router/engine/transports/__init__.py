"""Carrier transports: how a submit reaches a carrier and its results and reports come back.

``mqtt`` (the simulated super network's interconnect) is the first implementation; an SMPP
or HTTP carrier transport would sit beside it.
"""
