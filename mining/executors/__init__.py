"""How stages run: sequentially in-process (local) or as a Ray Data plan (ray). Only this package imports Ray."""
