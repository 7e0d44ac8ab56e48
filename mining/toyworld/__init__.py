"""A synthetic scene world with ground truth: shards written like real input, COCO ground truth, and the
tiny models the project trains on it (see README, "The toy world")."""
