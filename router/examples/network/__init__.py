"""The example network: `supernet explain` uses it until a generated network exists."""
