"""Shadow mode and the production pointer: which models predict, how they did, what serves.

The logic under the `deployment` asset domain (`assets/shadow.py`, `assets/deployment.py`); named
for what it decides, so one word names one thing."""
