"""supernet carriers: the simulated super network of operators and aggregators."""
