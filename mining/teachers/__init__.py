"""Class-agnostic mask teachers behind one protocol, and the stage that runs the configured one."""
from mining.teachers.base import Teacher, postfilter_masks
from mining.teachers.stage import TeacherStage, build_teacher

__all__ = ["Teacher", "TeacherStage", "build_teacher", "postfilter_masks"]
