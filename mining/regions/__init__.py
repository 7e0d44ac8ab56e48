"""open_clip region and text embeddings: masked crops (OVSeg) or dense mask pooling (OPSNet, Uni-OVSeg).
The stage that uses them is `mining.stages.regions`."""
