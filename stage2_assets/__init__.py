"""stage2: keeps a trading model ensemble current as markets move."""
