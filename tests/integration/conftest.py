"""The carriers' fixtures (small hand-made networks, unique ids) for the broker tests of
the simulator, which live here with every other test that needs a real broker."""

from tests.carriers.conftest import generated, network_dir, small_network, uid

__all__ = ["generated", "network_dir", "small_network", "uid"]
