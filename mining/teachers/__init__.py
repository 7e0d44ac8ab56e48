"""Class-agnostic mask teachers behind one protocol (the stage that runs them is `mining.stages.teacher`)."""
from mining.teachers.base import Teacher, postfilter_masks

__all__ = ["Teacher", "postfilter_masks"]
