"""ovmine: mine mask–noun pseudo-labels from image–caption shards for open-vocabulary segmentation."""
__version__ = "0.1.0"
