"""Shadow mode and the production pointer: which models predict, how they did, what serves."""
