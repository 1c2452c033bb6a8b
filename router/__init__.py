"""supernet router: the worker, the routing core, and the command line."""
