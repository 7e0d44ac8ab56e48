"""Teacher: run the configured class-agnostic mask model, apply the shared post-filters, drop images with no
mask. Images go through the model `execution.teacher.batch_size` at a time, on the device its `num_gpus` gives."""
from __future__ import annotations

from mining.config import ModelStageResources, RunConfig, TeacherConfig
from mining.records import Drop, Sample
from mining.stages.base import Stage
from mining.teachers.base import Teacher, postfilter_masks


def build_teacher(cfg: TeacherConfig, device: str = "auto", precision: str = "fp32", compile: bool = False) -> Teacher:
    """`device`: 'auto', 'cpu' or 'cuda', `precision` and `compile` as `execution.teacher` names them (the learned
    teachers; Felzenszwalb runs on the CPU; SAM's pipeline is not compiled)."""
    if cfg.kind == "felzenszwalb":
        from mining.teachers.felzenszwalb import FelzenszwalbTeacher

        return FelzenszwalbTeacher(cfg.felzenszwalb)
    if cfg.kind == "mask2former":
        from mining.teachers.mask2former import Mask2FormerTeacher

        return Mask2FormerTeacher(cfg.mask2former, device, precision, compile)
    if cfg.kind == "sam":
        from mining.teachers.sam import SamTeacher

        return SamTeacher(cfg.sam, device, precision)
    raise ValueError(f"teacher.kind={cfg.kind!r} is not known")


class TeacherStage(Stage):
    name = "teacher"
    reads = ("image",)
    fills = ("masks", "mask_scores", "rles")

    def __init__(self, teacher: TeacherConfig, resources: ModelStageResources) -> None:
        super().__init__(resources)
        self.settings = teacher
        self.teacher: Teacher | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "TeacherStage":
        return cls(cfg.teacher, cfg.execution.teacher)

    def setup(self) -> None:
        from mining.devices import stage_device   # torch: imported on the worker

        res = self.resources
        self.teacher = build_teacher(self.settings, stage_device(res.num_gpus).type, res.precision, res.compile)

    def process(self, samples: list[Sample]) -> None:
        assert self.teacher is not None
        tc = self.settings
        for sample, (masks, scores) in zip(samples, self.teacher.predict([s.image for s in samples])):
            masks, scores, rles = postfilter_masks(masks, scores, tc.min_area, tc.dedupe_iou, tc.max_masks)
            if len(masks) == 0:
                sample.drop_with(Drop.NO_MASKS)
            else:
                sample.masks, sample.mask_scores, sample.rles = masks, scores, rles
