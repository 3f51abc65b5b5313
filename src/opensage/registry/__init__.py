"""The model registry: model package groups and their versioned model packages (:mod:`.packages`)."""
