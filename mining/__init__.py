"""ovmine: mine mask–noun pseudo-labels from image–caption shards for open-vocabulary segmentation."""
import logging

__version__ = "0.1.0"

logger = logging.getLogger("ovmine")
logger.addHandler(logging.NullHandler())
