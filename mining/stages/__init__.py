"""The mining flow, one module per step, in the order data goes through them:

    read -> decode -> entities -> teacher -> regions -> match -> write

Entities run before the teacher (the papers' figure draws them side by side): a caption with no visual noun
then costs no GPU time, and the CLIP actor can embed both masks and entity texts in one place. `read` cuts an
input shard into chunks; the five stages in between work on a chunk's samples; `write` commits the shard on
the worker. The library code they call lives in sources/, entities/, teachers/, regions/, matching.py, sinks/."""
from __future__ import annotations

from mining.config import RunConfig
from mining.stages.base import Stage

FLOW = ("decode", "entities", "teacher", "regions", "match")   # the stages' names, in the order data flows


def build_stages(cfg: RunConfig) -> list[Stage]:
    """The stages of FLOW, each built from its own section of `cfg`."""
    # imported here: torch, open_clip and spaCy take seconds to import, and a bad input should fail at once
    from mining.stages.decode import DecodeStage
    from mining.stages.entities import EntityStage
    from mining.stages.match import MatchStage
    from mining.stages.regions import RegionStage
    from mining.stages.teacher import TeacherStage

    return [stage.from_config(cfg) for stage in (DecodeStage, EntityStage, TeacherStage, RegionStage, MatchStage)]
