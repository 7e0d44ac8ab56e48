"""Captions beyond an image's own: `captions.refine`'s vision-language model (the stage that runs it is
`mining.stages.refine`)."""
