"""open_clip region and text embeddings: masked crops (OVSeg) or dense mask pooling (OPSNet, Uni-OVSeg)."""
from mining.regions.stage import RegionStage

__all__ = ["RegionStage"]
