"""RL distillation methods, one module each, registered in :data:`agents.registry.METHODS`."""
