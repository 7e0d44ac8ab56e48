"""The teacher stage: run the configured teacher, apply the shared post-filters, drop images with no mask."""
from __future__ import annotations

from mining.config import RunConfig, TeacherConfig
from mining.records import Drop, Sample
from mining.stage import Stage
from mining.teachers.base import Teacher, postfilter_masks


def build_teacher(cfg: TeacherConfig) -> Teacher:
    if cfg.kind == "felzenszwalb":
        from mining.teachers.felzenszwalb import FelzenszwalbTeacher

        return FelzenszwalbTeacher(cfg.felzenszwalb)
    if cfg.kind == "mask2former":
        from mining.teachers.mask2former import Mask2FormerTeacher

        return Mask2FormerTeacher(cfg.mask2former, cfg.device)
    if cfg.kind == "sam":
        from mining.teachers.sam import SamTeacher

        return SamTeacher(cfg.sam, cfg.device)
    raise ValueError(f"teacher.kind={cfg.kind!r} is not known")


class TeacherStage(Stage):
    name = "teacher"

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.teacher: Teacher | None = None

    def setup(self) -> None:
        self.teacher = build_teacher(self.cfg.teacher)

    def process(self, samples: list[Sample]) -> None:
        assert self.teacher is not None
        tc = self.cfg.teacher
        batch = tc.batch_size
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            for sample, (masks, scores) in zip(chunk, self.teacher.predict([s.image for s in chunk])):
                masks, scores = postfilter_masks(masks, scores, tc.min_area, tc.dedupe_iou, tc.max_masks)
                if len(masks) == 0:
                    sample.drop_with(Drop.NO_MASKS)
                else:
                    sample.masks, sample.mask_scores = masks, scores
