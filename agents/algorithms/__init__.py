"""RL student algorithms, one module each, registered in :data:`agents.registry.ALGORITHMS`."""
