"""Score a mining output against COCO-format ground truth: pair precision and recall, per category, and
the region encoder's top-1 accuracy on ground-truth masks."""
