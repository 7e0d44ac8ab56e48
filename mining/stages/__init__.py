"""The mining flow, one module per step, in the order data goes through them:

    read -> decode -> [refine] -> entities -> teacher -> regions -> match -> write

Refine (only with `captions.refine`) has a vision-language model add a caption per image before entities are
parsed, so that nouns the web caption left out can be mined too. Entities run before the teacher (the papers'
figure draws them side by side): a caption with no visual noun then costs no GPU time, and the CLIP actor can
embed both masks and entity texts in one place. `read` cuts an input shard into chunks; the stages in between
work on a chunk's samples; `write` commits the shard on the worker. The library code they call lives in
sources/, captions/, entities/, teachers/, regions/, matching.py, sinks/."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

from mining.config import RunConfig
from mining.stages.base import Stage, StageContractError

if TYPE_CHECKING:   # the reader and writer import the shard and output libraries: only when a run builds them
    from mining.stages.read import ShardReader
    from mining.stages.write import ShardWriter

# The flow: each stage's name (which also names its resources, execution.<name>) and its class, in the order data
# goes through them. A new stage is its module and one line here.
FLOW: dict[str, str] = {
    "decode": "mining.stages.decode:DecodeStage",
    "refine": "mining.stages.refine:RefineStage",
    "entities": "mining.stages.entities:EntityStage",
    "teacher": "mining.stages.teacher:TeacherStage",
    "regions": "mining.stages.regions:RegionStage",
    "match": "mining.stages.match:MatchStage",
}

READER_FILLS = ("members",)   # what the reader (stages.read) gives every sample it yields: its raw tar members

# stages a run has only when its config asks for them
OPTIONAL: dict[str, Callable[[RunConfig], bool]] = {"refine": lambda cfg: cfg.captions.refine is not None}


def stage_names(cfg: RunConfig) -> list[str]:
    """The names of the stages `cfg` runs, in FLOW's order."""
    return [name for name in FLOW if name not in OPTIONAL or OPTIONAL[name](cfg)]


def stage_class(name: str) -> type[Stage]:
    """The class FLOW names for `name`, imported now: torch, open_clip and spaCy take seconds to import, and a bad
    input should fail at once, before any of them."""
    module, _, cls = FLOW[name].partition(":")
    return getattr(import_module(module), cls)


def check_flow(stages: list[Stage]) -> None:
    """Every field a stage reads is filled by the reader or by a stage before it: a stage put in the wrong
    place, or one that needs a field nothing fills, fails here, before any shard is read."""
    have = set(READER_FILLS)
    for stage in stages:
        missing = [f for f in stage.reads if f not in have]
        if missing:
            raise StageContractError(f"stage {stage.name} reads {', '.join(missing)}, which no stage before it fills "
                                     f"(flow: {', '.join(s.name for s in stages)})")
        have.update(stage.fills)


@dataclass
class Flow:
    """Everything a run's workers do, in order: the reader (a shard task -> chunks), the stages, the writer."""
    reader: ShardReader
    stages: list[Stage]
    writer: ShardWriter

    def steps(self) -> list:
        return [self.reader, *self.stages, self.writer]


def build_stages(cfg: RunConfig) -> list[Stage]:
    """The stages `cfg` runs, in FLOW's order, each built from its own section of `cfg`, the flow checked."""
    stages = [stage_class(name).from_config(cfg) for name in stage_names(cfg)]
    check_flow(stages)
    return stages
