"""Open-vocabulary semantic segmentation at inference: the trained segmenter (Model B), or teacher masks
classified by a CLIP's masked crops, optionally ensembled (OVSeg A.5); label maps and segments out."""
