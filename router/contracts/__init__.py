"""The contracts: every format that crosses a process boundary, and nothing else.

- ``wire``: the customer wire format on Kafka (send requests, receipts, dead-letter headers);
- ``interconnect``: the carrier interconnect over MQTT (submits, results, delivery reports,
  acknowledgements, status and directory topics);
- ``network_file``: the network directory's ``network.json`` description;
- ``codes``: the one registry of status codes every table reads.

Contracts import nothing from the project but ``router.support``; the engine, the simulator
and the tools all import them.
"""
