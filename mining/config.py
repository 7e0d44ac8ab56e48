"""Typed run configuration: YAML in, validated before any work, resolved config and hash out.

Every section forbids unknown keys, so a typo fails at load time with the dotted field name instead of
being silently ignored halfway through a run on a cluster.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A bad configuration; the message names the field and what to do about it."""


class _Section(BaseModel):
    # no NaN or infinity anywhere: YAML reads .inf and .nan as floats, and no field means them
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SourceConfig(_Section):
    captions_per_image: int = Field(1, ge=1, description="how many captions of an image to use (COCO has 5)")
    caption_json_fields: list[str] = Field(
        default_factory=lambda: ["captions", "caption"],
        description="keys of {key}.json looked up for captions, in order; a value may be a string or a list",
    )
    max_image_pixels: int = Field(50_000_000, gt=0, description="decompression-bomb guard on the stored size")
    working_size: int = Field(1024, ge=32, description="longest image side after decode; masks use this frame")


class StorageConfig(_Section):
    """How S3 is reached, for every command: mining, training and what reads their outputs. Credentials come
    from the environment only (the standard AWS chain), never from a config file."""
    endpoint_url: str | None = Field(None, description="S3 endpoint (--s3-endpoint); null: AWS_ENDPOINT_URL_S3, "
                                                       "AWS_ENDPOINT_URL or AWS's own")
    region: str | None = Field(None, description="S3 region; null: AWS_REGION or the SDK's default")
    max_attempts: int = Field(10, ge=1, description="attempts per S3 request before an error is final")


# settings that have a new home: an old config that still names them is told where
MOVED_FIELDS = {"source.s3_endpoint_url": "storage.endpoint_url", "source.s3_region": "storage.region",
                "source.s3_max_attempts": "storage.max_attempts"}


class FelzenszwalbConfig(_Section):
    input_size: int = Field(512, ge=16, description="longest side segmented; masks are scaled back up")
    scales: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [100.0, 400.0], min_length=1,
        description="Felzenszwalb's scale parameters, one segmentation each (larger: bigger segments)")
    sigma: float = Field(0.8, ge=0)
    min_size: int = Field(50, ge=1)


class Mask2FormerConfig(_Section):
    model: str = Field("facebook/mask2former-swin-large-coco-panoptic",
                       description="transformers hub id or local directory (Mask2Former or MaskFormer)")
    mask_threshold: float = Field(0.4, gt=0, lt=1, description="OVSeg's released code binarises at 0.4")
    top_n: int = Field(100, ge=1, description="queries kept, best class score (1 - p(no-object)) first")
    score: Literal["no_object", "instance"] = Field(
        "no_object",
        description="a proposal's score: 'no_object' = 1 - p(no-object); 'instance' = that times the mean mask "
                    "probability inside the binarised mask (Mask2Former's instance scoring), computed for "
                    "the top_n queries by class score, which are then re-ranked by it")
    min_score: float = Field(0.0, ge=0, le=1, description="minimum score (of the kind teacher.mask2former.score "
                                                          "names)")


class SamConfig(_Section):
    model: str = Field("facebook/sam-vit-huge", description="transformers hub id or local directory")
    points_per_side: int = Field(32, ge=1, description="SAM's automatic generator default: 32x32 points")
    points_per_batch: int = Field(64, ge=1)
    pred_iou_thresh: float = Field(0.88, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    box_nms_thresh: float = Field(0.7, ge=0, le=1)


class TeacherConfig(_Section):
    kind: Literal["felzenszwalb", "mask2former", "sam"] = "felzenszwalb"
    min_area: int = Field(64, ge=1, description="pixels, in the working frame")
    dedupe_iou: float = Field(0.9, gt=0, le=1, description="drop a mask whose IoU with a better one exceeds this")
    max_masks: int = Field(64, ge=1)
    felzenszwalb: FelzenszwalbConfig = Field(default_factory=FelzenszwalbConfig)
    mask2former: Mask2FormerConfig = Field(default_factory=Mask2FormerConfig)
    sam: SamConfig = Field(default_factory=SamConfig)

    def model_id(self) -> str:
        if self.kind == "felzenszwalb":
            return "felzenszwalb(" + ",".join(f"{s:g}" for s in self.felzenszwalb.scales) + ")"
        return getattr(self, self.kind).model


class LLMConfig(_Section):
    """entities.kind=llm: the model that reads each caption and answers its entities as JSON."""
    backend: Literal["transformers", "vllm", "http"] = Field(
        "transformers", description="transformers: a causal LM run in the entity stage's workers; vllm: vLLM's "
                                    "engine in those workers (a GPU each: execution.entities.num_gpus); http: an "
                                    "OpenAI-compatible server a user runs (vLLM, TGI, a hosted API)")
    model: str | None = Field(None, description="transformers, vllm: hub id or local folder; http: the model name "
                                                "the server is asked for")
    endpoint: str | None = Field(None, description="http: the server's base URL, e.g. http://HOST:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="http: environment variable holding the API key "
                                                           "(sent when set)")
    max_new_tokens: int = Field(256, ge=16)
    batch_size: int = Field(16, ge=1, description="captions per generate call (transformers; vllm schedules a "
                                                  "stage batch itself) or requests in flight (http)")
    timeout_s: float = Field(60.0, gt=0, description="http: seconds per request")
    max_retries: int = Field(3, ge=0, description="http: retries of a failed or rate-limited request")
    requests_per_second: float | None = Field(
        None, gt=0, description="http: at most this many requests a second from each entity worker (a hosted "
                                "API's rate limit); null: no limit")
    constrained: bool = Field(True, description="vllm, http: decoding constrained to the entities JSON schema "
                                                "(vLLM structured outputs; http: response_format json_schema, which "
                                                "vLLM's server and OpenAI's API accept); false for a server without "
                                                "it. transformers decodes freely (the answer is checked either way)")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="vllm: arguments of vllm.LLM (tensor_parallel_size, max_model_len, "
                                          "gpu_memory_utilization, ...)")
    fallback: Literal["spacy", "none"] = Field(
        "spacy", description="a caption whose answer does not parse, or names a word not in the caption: parsed "
                             "by spaCy instead, or left without entities")
    cache: bool = Field(True, description="answers kept on this machine per (model, prompt, caption)")

    @model_validator(mode="after")
    def _where(self) -> "LLMConfig":
        if self.model is None:
            raise ValueError("model: name the LLM (a hub id or folder; for http, the server's model name)")
        if self.backend == "http" and not self.endpoint:
            raise ValueError("endpoint: the http backend needs the server's URL (http://HOST:PORT/v1)")
        only = {"endpoint": "http", "requests_per_second": "http", "engine_kwargs": "vllm"}
        for name, backend in only.items():
            if getattr(self, name) and self.backend != backend:
                raise ValueError(f"{name}: only the {backend} backend uses it (backend is {self.backend})")
        return self


# entities.llm settings that change how answers are fetched, not what they are: outside the config hash
LLM_UNHASHED = ("endpoint", "api_key_env", "batch_size", "timeout_s", "max_retries", "requests_per_second",
                "engine_kwargs", "cache")


class EntitiesConfig(_Section):
    kind: Literal["spacy", "llm"] = "spacy"
    spacy_model: str = Field("en_core_web_sm", description="the parser (kind=spacy) and the LLM's fallback")
    extra_stop_nouns: list[str] = Field(default_factory=list, description="added to the built-in stop-list")
    max_entities: int = Field(16, ge=1, description="per image, after merging captions")
    keep_compounds: bool = Field(True, description="'fire hydrant' rather than 'hydrant'")
    llm: LLMConfig | None = Field(None, description="kind=llm only: the model, backend and fallback")

    @model_validator(mode="after")
    def _llm_given(self) -> "EntitiesConfig":
        if self.kind == "llm" and self.llm is None:
            raise ValueError("llm: entities.kind=llm needs an llm section (backend, model; endpoint for http)")
        return self


DEFAULT_REFINE_PROMPT = "Describe every object and surface you can see in this image."


class RefineConfig(_Section):
    """captions.refine: a vision-language model writes one more caption per image (Uni-OVSeg: web alt-text names
    only part of what an image shows), parsed for entities beside the image's own captions."""
    model: str = Field(..., min_length=1, description="a transformers image-text-to-text model: hub id or local "
                                                      "folder (AutoProcessor + AutoModelForImageTextToText)")
    prompt: str = Field(DEFAULT_REFINE_PROMPT, min_length=1, description="the instruction sent with each image")
    max_new_tokens: int = Field(64, ge=8, description="the refined caption's length bound, in tokens")
    keep: Literal["beside"] = Field("beside", description="beside: the refined caption is added after the image's "
                                                          "own captions (the only mode for now)")

    @model_validator(mode="after")
    def _prompt_has_words(self) -> "RefineConfig":
        if not self.prompt.strip():
            raise ValueError("prompt: give the instruction in words (e.g. the default, "
                             f"{DEFAULT_REFINE_PROMPT!r})")
        return self


class CaptionsConfig(_Section):
    refine: RefineConfig | None = Field(None, description="a vision-language model adds a caption per image before "
                                                          "entities; null: off (the image's own captions only)")


class RegionsConfig(_Section):
    mode: Literal["masked_crop", "mask_pooling"] = "masked_crop"
    model: str = Field("ViT-B-16", description="open_clip model name, 'hf-hub:org/repo' or 'local-dir:/path'")
    pretrained: str | None = Field("openai", description="open_clip tag, local file, s3:// URI, or null")
    model_config_dir: str | None = Field(None, description="extra open_clip model configs (JSON) to register")
    scales: list[Annotated[int, Field(ge=32)]] | None = Field(
        None, min_length=1,
        description="mask_pooling only: image sizes (longest side, rounded to the trunk's stride) at which the "
                    "image is embedded, one embedding per mask and size; null: [source.working_size]. "
                    "masked_crop takes its scales from regions.crop_context instead")
    crop_context: list[Annotated[float, Field(ge=1.0, le=4.0)]] = Field(
        default_factory=lambda: [1.0], min_length=1,
        description="masked_crop only: one crop per mask and ratio, the mask's tight box grown about its "
                    "centre by that factor (1.0: the tight box, as OVSeg); outside the mask the crop is the "
                    "mean colour, so a larger ratio shows CLIP the same mask smaller, with margin")
    crop_fit: Literal["pad", "stretch"] = Field(
        "pad", description="masked_crop only (mask_pooling ignores it): how the (grown) box becomes CLIP's "
                           "square input: 'pad' pads it square with the mean colour (aspect kept); 'stretch' "
                           "resizes it to the square ignoring aspect, as OVSeg's released code does")
    templates: Literal["vild", "single"] = "vild"

    @model_validator(mode="after")
    def _pooling_needs_convnet(self) -> "RegionsConfig":
        name = self.model.lower()
        if self.mode == "mask_pooling" and not name.startswith(("hf-hub:", "local-dir:")) and "convnext" not in name:
            raise ValueError(
                f"regions.mode=mask_pooling needs a convolutional CLIP (an open_clip 'convnext_*' model), "
                f"got regions.model={self.model!r}; use mode=masked_crop for ViT models")
        return self

    @model_validator(mode="after")
    def _scale_settings_match_the_mode(self) -> "RegionsConfig":
        """Each mode has its own notion of scale; a setting of the other mode would be silently ignored."""
        if self.mode == "masked_crop" and self.scales is not None:
            raise ValueError(
                f"regions.scales={self.scales} applies to regions.mode=mask_pooling only; masked crops take "
                f"the working frame's pixels directly, and their scales are regions.crop_context (context "
                f"ratios of the mask's box, e.g. [1.0, 1.5]); remove regions.scales")
        if self.mode == "mask_pooling" and self.crop_context != [1.0]:
            raise ValueError(
                f"regions.crop_context={self.crop_context} applies to regions.mode=masked_crop only; "
                f"mask pooling's scales are image sizes, regions.scales (e.g. [896, 1024])")
        return self


class MatchConfig(_Section):
    method: Literal["hungarian", "argmax"] = "hungarian"
    min_similarity: float | None = Field(0.2, ge=-1, le=1,
                                         description="fused cosine similarity of a kept pair; null: off")
    min_margin: float | None = Field(
        None, ge=0, le=2, description="regret: how much the best assignment's cost rises without this pair "
                                      "(argmax: over the entity's next-best mask); null: off")
    min_probability: float | None = Field(
        None, ge=0, le=1, description="softmax over the entity's candidate masks; null: off")
    temperature: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="softmax temperature of the probability; null: the region model's own 1/logit_scale")
    use_counts: bool = Field(True, description="'two circles' may take two masks (Hungarian only)")
    one_to_one: Literal["per_caption", "per_image"] = Field(
        "per_caption", description="Hungarian only: each mask goes to one entity of each caption (two captions "
                                   "may name one thing with two words), or to one entity of the whole image")


class OutputConfig(_Section):
    write_images: bool = Field(False, description="store the decoded image next to each record")
    image_format: Literal["jpg", "png"] = "jpg"


class StageResources(_Section):
    """What a stage asks of the cluster, and the one batch size it works in."""
    concurrency: int = Field(1, ge=1, description="actors (or parallel tasks) for this stage")
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float | Literal["auto"] = Field(
        0.0, description="GPUs per actor; also the stage's device: 0 the CPU, 'auto' a GPU when the cluster "
                         "(or, locally, this machine) has one")
    batch_size: int = Field(8, ge=1, description="images per call of the stage's model (teacher: images per "
                                                 "forward pass; regions: the masked crops of that many images)")


class ModelStageResources(StageResources):
    """A model stage's resources, and how its forward passes compute."""
    precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = Field(
        "auto", description="forward passes in fp32, tf32 (fp32 with TF32 matmuls, CUDA only), bf16 or fp16 "
                            "(autocast); auto: bf16 on CUDA, fp32 on the CPU")
    compile: bool = Field(False, description="run the model through torch.compile (pays on a GPU over a long run; "
                                             "the first batches wait for the compilation)")


class ExecutionConfig(_Section):
    executor: Literal["ray", "local"] = "ray"
    ray_address: str | None = Field(None, description="None starts a local Ray; 'auto' joins a cluster")
    max_retries: int = Field(3, ge=0, description="retries of a failed task (read, decode, match, write); a model "
                                                  "stage's calls are retried for as long as its actor is restarted")
    max_actor_restarts: int = Field(-1, ge=-1, description="restarts of a dead stage actor (-1: as many as it takes)")
    read: StageResources = Field(default_factory=StageResources,
                                 description="reading input shards (I/O: half a CPU each; concurrency: Ray Data's)")
    decode: StageResources = Field(default_factory=lambda: StageResources(concurrency=2))
    refine: ModelStageResources = Field(default_factory=lambda: ModelStageResources(num_gpus="auto", batch_size=4),
                                        description="captions.refine only: the vision-language model's workers "
                                                    "(compile is not supported: generate runs uncompiled)")
    entities: StageResources = Field(default_factory=StageResources)
    teacher: ModelStageResources = Field(default_factory=lambda: ModelStageResources(num_gpus="auto", batch_size=4))
    regions: ModelStageResources = Field(default_factory=lambda: ModelStageResources(num_gpus="auto", batch_size=4))
    match: StageResources = Field(default_factory=StageResources)
    write: StageResources = Field(default_factory=lambda: StageResources(concurrency=2, num_cpus=0.25))
    chunk_size: int | None = Field(
        256, ge=1, description="samples per unit of work through the stages and the write: a larger input shard "
                               "is mined in chunks whose parts the write joins back into one output shard (bounds "
                               "the memory a shard in flight takes); null: whole shards")
    stages: dict[str, StageResources] = Field(
        default_factory=dict, description="resources of a stage added to the flow (mining.stages.FLOW) that has no "
                                          "field above, by its name; written execution.<name> like the others")

    @model_validator(mode="before")
    @classmethod
    def _added_stages(cls, data: Any) -> Any:
        """`execution.<name>` of a stage in the flow without a field of its own goes to `stages`; any other
        unknown key stays, and is refused (with its spelling suggestion) as every section refuses one."""
        if not isinstance(data, dict):
            return data
        from mining.stages import FLOW   # at validation time: mining.stages imports this module

        added = {k: v for k, v in data.items() if k in FLOW and k not in cls.model_fields}
        if not added:
            return data
        rest = {k: v for k, v in data.items() if k not in added}
        return rest | {"stages": {**(data.get("stages") or {}), **added}}

    def resources(self, stage: str) -> StageResources:
        """The resources of the stage named `stage`: its field, or its entry in `stages`, or the defaults."""
        value = getattr(self, stage, None) if stage in type(self).model_fields else None
        return value if isinstance(value, StageResources) else self.stages.get(stage, StageResources())

    def stage_resources(self) -> list[StageResources]:
        """Every step's resources (the stages', optional ones included, and the write's)."""
        return [value for value in (getattr(self, name) for name in type(self).model_fields)
                if isinstance(value, StageResources)] + list(self.stages.values())


class RunConfig(_Section):
    source: SourceConfig = Field(default_factory=SourceConfig)
    captions: CaptionsConfig = Field(default_factory=CaptionsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    entities: EntitiesConfig = Field(default_factory=EntitiesConfig)
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    match: MatchConfig = Field(default_factory=MatchConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="after")
    def _vllm_has_a_gpu(self) -> "RunConfig":
        llm = self.entities.llm
        if self.entities.kind == "llm" and llm is not None and llm.backend == "vllm" \
                and self.execution.entities.num_gpus == 0:
            raise ValueError("execution.entities.num_gpus: the vllm backend runs vLLM's engine on a GPU; give the "
                             "entity stage one (1, a fraction, or 'auto')")
        return self

    @model_validator(mode="after")
    def _refine_is_not_compiled(self) -> "RunConfig":
        if self.execution.refine.compile:
            raise ValueError("execution.refine.compile: the refine stage's generate loop runs uncompiled; set it "
                             "to false")
        return self

    def running_resources(self) -> list[StageResources]:
        """The resources of the steps this run has: `execution.refine` only when `captions.refine` is set."""
        skip = self.execution.refine if self.captions.refine is None else None
        return [res for res in self.execution.stage_resources() if res is not skip]

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """Hash of what decides the outputs; execution settings (actors, address) and how S3 is reached do
        not change them."""
        payload = self.resolved()
        payload.pop("execution")
        payload.pop("storage")
        llm = payload["entities"].pop("llm")   # added after outputs were hashed without it: unset, it is absent
        if llm is not None:
            payload["entities"]["llm"] = {k: v for k, v in llm.items() if k not in LLM_UNHASHED}
        captions = payload.pop("captions")   # added later too: with refine unset, outputs hash as before
        if captions["refine"] is not None:
            payload["captions"] = captions
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        for name, value in PLACEHOLDERS.items():   # the same config hashes the same wherever it is installed
            blob = blob.replace(json.dumps(str(value))[1:-1], f"${{{name}}}")
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key.sub=value` strings; the value is read as YAML so `[224, 336]`, `true` and `null` work."""
    parsed = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. match.min_similarity=0.25")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw)))
    return parsed


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the section that `loc` points into (for spelling suggestions)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        # an optional section (`Section | None`) is its section
        found = [a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return []
        model = found[0]
    return list(model.model_fields)


# Fields that were removed, and where their setting lives now (one batch size and one device setting per stage).
RETIRED_FIELDS = {
    "teacher.batch_size": "execution.teacher.batch_size",
    "teacher.device": "execution.teacher.num_gpus (0: the CPU, 'auto': a GPU when there is one)",
    "regions.batch_size": "execution.regions.batch_size (images whose masked crops share a CLIP forward pass)",
    "regions.device": "execution.regions.num_gpus (0: the CPU, 'auto': a GPU when there is one)",
}


def _format_validation_error(err: ValidationError, origin: str, model: type[BaseModel],
                             set_keys: dict[str, str]) -> str:
    """One line per problem, each naming its dotted field; a problem in a `--set` value is blamed on `--set`."""
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden" and field in RETIRED_FIELDS:
            msg = f"no longer a setting: use {RETIRED_FIELDS[field]}"
        elif e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), _fields_at(model, e["loc"][:-1]), n=1)
            hint = ".".join([*map(str, e["loc"][:-1]), close[0]]) if close else None
            msg = f"unknown field (did you mean {hint}?)" if hint else \
                "unknown field (check the spelling; `ovmine config show` lists the known fields)"
        # the --set that gave this field, or that made up this section (`--set foo.bar=1`: unknown `foo`)
        given = next((k for k in set_keys if field == k or field.startswith(k + ".") or k.startswith(field + ".")),
                     None)
        lines.append(f"--set {given}={set_keys[given]}: {msg}" if given else f"{origin}: {field}: {msg}")
    return lines[0] if len(lines) == 1 else f"invalid config ({len(lines)} problems):\n  " + "\n  ".join(lines)


# Placeholders a config may use in any string value, filled in wherever a config is loaded (so that
# `ovmine mine --config mining/toyworld/demo.yaml` works as `ovmine demo` does).
PLACEHOLDERS = {"TOYWORLD_WEIGHTS": Path(__file__).resolve().parent / "toyworld" / "weights"}
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def fill_placeholders(node: Any, where: str = "") -> Any:
    """Replace ${NAME} in every string of a config tree; an unknown name fails naming the field."""
    if isinstance(node, dict):
        return {k: fill_placeholders(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [fill_placeholders(v, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def value(m: re.Match) -> str:
        if m.group(1) not in PLACEHOLDERS:
            raise ConfigError(f"{where}: unknown placeholder ${{{m.group(1)}}} (known: "
                              + ", ".join(f"${{{k}}}" for k in PLACEHOLDERS) + ")")
        return str(PLACEHOLDERS[m.group(1)])
    return _PLACEHOLDER.sub(value, node)


def _plain(node: Any, where: str = "") -> Any:
    """A deep copy made of JSON values only. YAML reads `2024-01-01` as a date and `.inf` as a float: the
    first is refused here naming the field (quote it to mean a string), the second by the fields' bounds."""
    if isinstance(node, dict):
        return {str(k): _plain(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(node)]
    if node is None or isinstance(node, (str, int, float, bool)):
        return node
    raise ConfigError(f"{where or '<root>'}: {node!r} is a {type(node).__name__}, not a config value "
                      f"(quote it in the YAML if it is meant as text)")


def validated(model: type[ModelT], tree: dict[str, Any] | None = None, overrides: list[str] | None = None,
              origin: str = "<dict>") -> ModelT:
    """A config model from a YAML tree and `--set` overrides; every error names its dotted field."""
    tree = _plain(tree or {})  # deep copy, and rejects non-JSON values (a YAML date, say) naming the field
    set_keys = {}   # dotted key -> the text given, to blame a bad value on --set rather than on the file
    for item, (key, value) in zip(overrides or [], parse_overrides(overrides or [])):
        _set_dotted(tree, key, value)
        set_keys[key] = item.split("=", 1)[1]
    tree = fill_placeholders(tree)
    for old, new in MOVED_FIELDS.items():
        section, key = old.split(".")
        node = tree.get(section)
        if isinstance(node, dict) and key in node:
            given = "--set " + old if old in set_keys else origin
            raise ConfigError(f"{given}: {old} is now {new} (one storage section for every command)")
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin, model, set_keys)) from None


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with the package, by name: `--config tiny` works from any directory."""
    here = Path(__file__).resolve().parent
    found = {"demo": here / "toyworld" / "demo.yaml"}
    for folder in (here / "_configs", here.parent / "configs"):   # installed wheel, then a source checkout
        if folder.is_dir():
            found |= {p.stem: p for p in sorted(folder.glob("*.yaml"))}
            break
    return found


def config_path(path: str | Path) -> Path:
    """A config file's path: an existing file, or the name of a shipped config (`tiny`, `coco.yaml`)."""
    given = Path(path)
    if given.is_file() or len(given.parts) != 1:
        return given
    return shipped_configs().get(given.name.removesuffix(".yaml").removesuffix(".yml"), given)


def read_config_file(path: str | Path, what: str = "config", empty: str | None = None) -> dict[str, Any]:
    """The YAML mapping in `path` (or a shipped config's name). `empty`: the error for an empty file (None:
    an empty file means defaults)."""
    path = config_path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path} (or name a shipped config: "
                          + ", ".join(shipped_configs()) + ")")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} file {path} is not valid YAML: {err}") from None
    if tree is None and empty is not None:
        raise ConfigError(f"{what} file {path} is empty; {empty}")
    if not isinstance(tree or {}, dict):
        raise ConfigError(f"{what} file {path}: the top level must be a mapping")
    return tree or {}


def build_config(tree: dict[str, Any] | None = None, overrides: list[str] | None = None,
                 origin: str = "<dict>") -> RunConfig:
    return validated(RunConfig, tree, overrides, origin)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    # the defaults name hub weights: an empty file must not quietly ask for them
    tree = {} if path is None else read_config_file(
        path, empty="start from configs/tiny.yaml (offline) or configs/coco.yaml")
    return build_config(tree, overrides, origin=str(config_path(path)) if path else "defaults")
