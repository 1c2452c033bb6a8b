"""The load generator: realistic send requests at a controlled rate, and the outcome report.

- ``mix``: the traffic shares (countries, classes, bodies, caps), defaults and TOML file;
- ``numbers``: valid mobile numbers built from the network's real deck prefixes;
- ``bodies``: message bodies, plain GSM-7 and Unicode, of varied length;
- ``traffic``: the seeded generator of requests (pure: same seed, same messages);
- ``pace``: rate control, a pure schedule driven by any clock;
- ``report``: outcomes and latencies from receipts (pure);
- ``run``: the Kafka shell that produces, reads receipts and reports;
- ``cli``: ``supernet load``.
"""
