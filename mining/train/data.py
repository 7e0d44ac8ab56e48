"""Mined (or curated) ovmine outputs as training examples: one masked crop per kept pair.

Records come through `mining.sinks.reader` and pictures through `mining.sinks.images.stream_images`, one at a
time (the path stats, report and export use: the image stored in the output, or the input shard read and decoded
again as the run decoded it), and crops through mining's own `masked_crops`: training sees exactly what mining embeds.

Shards are the unit of distribution: worker i of n reads shards i, i+n, ...; within a worker the shard order
and a shuffle buffer are seeded, so a stream is deterministic given (seed, worker, epoch)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mining.logs import logger
from mining.regions.masked_crop import masked_crops
from mining.sinks.images import stream_images
from mining.sinks.reader import MinedPair, MinedRecord, read_manifest, read_shard_records, shard_files
from mining.storage import Location, S3Options, Where
from mining.train.config import TrainFilters


class NoTrainingData(ValueError):
    """An output (or all of them) yields no pair to train on."""


@dataclass(frozen=True)
class ShardSource:
    """One committed output shard and the output it belongs to (its manifest decodes its images)."""
    output: Location
    shard: Location

    @property
    def stem(self) -> str:
        return self.shard.name.removesuffix(".tar")

    def to_plan(self) -> tuple[str, str]:
        """As a training plan holds it: plain strings (the plan's S3 settings reach them), local paths absolute
        for workers that run in another working directory."""
        return self.output.absolute().uri, self.shard.absolute().uri

    @classmethod
    def from_plan(cls, sources: list[tuple[str, str]], s3: S3Options | None) -> list["ShardSource"]:
        return [cls(Location.of(output, s3), Location.of(shard, s3)) for output, shard in sources]


@dataclass
class DataCounts:
    records: int = 0               # records read
    pairs: int = 0                 # pairs in those records
    filtered: int = 0              # pairs the filters dropped
    missing_image: int = 0         # kept pairs whose picture could not be read again (skipped)
    bad_mask: int = 0              # kept pairs with an empty mask or one not in the image's frame (skipped)
    examples: int = 0              # crops produced

    def add(self, other: "DataCounts") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class CropSpec:
    """How a mask becomes CLIP input: mining's masked crop, then CLIP's normalisation (as RegionStage)."""
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    context: float = 1.0
    fit: str = "pad"

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> torch.Tensor:
        """float[N, 3, S, S] normalised crops of the bool[N, H, W] masks of the uint8[H, W, 3] image."""
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        crops = masked_crops(pixels, torch.from_numpy(masks), self.size, fill=mean, context=self.context,
                             fit=self.fit)
        return (crops - mean[:, None, None]) / std[:, None, None]


@dataclass
class Example:
    pixels: torch.Tensor      # float[3, S, S], normalised
    noun: str
    stem: str
    key: str
    mask_index: int


@dataclass
class PairFilter:
    min_similarity: float | None = None
    min_margin: float | None = None
    allow: frozenset[str] | None = None
    deny: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, f: TrainFilters) -> "PairFilter":
        return cls(f.min_similarity, f.min_margin, frozenset(f.nouns_allow) if f.nouns_allow is not None else None,
                   frozenset(f.nouns_deny))

    def keep(self, pair: MinedPair) -> bool:
        if self.min_similarity is not None and pair.similarity < self.min_similarity:
            return False
        if self.min_margin is not None and pair.margin is not None and pair.margin < self.min_margin:
            return False
        if self.allow is not None and pair.noun not in self.allow:
            return False
        return pair.noun not in self.deny


def output_manifest(output: Where) -> dict:
    try:
        return read_manifest(output)
    except (FileNotFoundError, OSError) as err:
        raise NoTrainingData(f"{output}: not an ovmine output (no manifest.json: {err})") from None


def shard_sources(outputs: Iterable[Location]) -> list[ShardSource]:
    """Every committed shard of every output, outputs in the given order, shards sorted within each."""
    sources = []
    for output in outputs:
        shards = shard_files(output)
        if not shards:
            raise NoTrainingData(f"{output}: no committed shards (nothing under {output}/shards with a _done marker)")
        sources += [ShardSource(output, shard) for shard in shards]
    return sources


def worker_shards(sources: list[ShardSource], rank: int, world: int) -> list[ShardSource]:
    """Worker `rank` of `world` takes shards rank, rank+world, ...: disjoint, together all of them."""
    return sources[rank::world]


def scan_pairs(sources: list[ShardSource], filters: PairFilter, require: bool = True) -> tuple[list[str], DataCounts]:
    """The vocabulary (sorted nouns of the kept pairs) and the counts, from the records alone (no pictures).
    With `require`, no kept pair at all is an error naming the outputs."""
    nouns: set[str] = set()
    counts = DataCounts()
    for src in sources:
        for record in read_shard_records(src.shard):
            counts.records += 1
            for pair in record.pairs:
                counts.pairs += 1
                if filters.keep(pair):
                    nouns.add(pair.noun)
                else:
                    counts.filtered += 1
    if require and counts.pairs - counts.filtered == 0:
        where = ", ".join(sorted({s.output.uri for s in sources}))
        raise NoTrainingData(f"{where}: no pairs to train on ({counts.records} records, {counts.pairs} pairs, "
                             f"{counts.filtered} dropped by the filters)")
    return sorted(nouns), counts


def records_with_pictures(src: ShardSource, manifest: dict, filters: PairFilter, counts: DataCounts,
                          unpaired: Callable[[MinedRecord], bool] | None = None,
                          ) -> Iterator[tuple[MinedRecord, list[MinedPair], np.ndarray]]:
    """One shard's records that keep pairs under `filters` (and those without any for which `unpaired` says
    so), in record order, with those pairs and the picture (from the output, or read again from the input
    shard); a record whose picture cannot be read again is skipped and its pairs counted (`missing_image`).
    Both trainers read their shards through this."""
    wanted = []
    for record in read_shard_records(src.shard):
        counts.records += 1
        counts.pairs += len(record.pairs)
        kept = [p for p in record.pairs if filters.keep(p)]
        counts.filtered += len(record.pairs) - len(kept)
        if kept or (unpaired is not None and unpaired(record)):
            wanted.append((record, kept))
    if not wanted:
        return
    pictures = stream_images(src.output, manifest, src.stem, [r.key for r, _ in wanted])
    for (record, kept), (_, image) in zip(wanted, pictures):
        if image is None:
            counts.missing_image += len(kept)
            logger.warning("%s: picture of %r could not be read again; %d pair(s) skipped", src.shard, record.key,
                        len(kept))
            continue
        yield record, kept, image


def shard_examples(src: ShardSource, manifest: dict, filters: PairFilter, crop: CropSpec,
                   counts: DataCounts) -> Iterator[Example]:
    """The crops of one shard's kept pairs, in record order; a pair whose picture cannot be read again is
    skipped and counted (`missing_image`)."""
    for record, kept, image in records_with_pictures(src, manifest, filters, counts):
        good, masks = [], []
        for pair in kept:
            mask = record.masks[pair.mask_index].decode()
            if mask.shape != image.shape[:2] or not mask.any():
                counts.bad_mask += 1
                continue
            good.append(pair)
            masks.append(mask)
        if not good:
            continue
        pixels = crop(image, np.stack(masks))
        for pair, px in zip(good, pixels):
            counts.examples += 1
            yield Example(px, pair.noun, src.stem, record.key, pair.mask_index)


class ShuffleBuffer:
    """Hold up to `size` items; each new item takes the place of a uniformly chosen one, which is emitted."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng, self.items = size, rng, []

    def __call__(self, stream: Iterable) -> Iterator:
        for item in stream:
            if len(self.items) < self.size:
                self.items.append(item)
                continue
            i = int(self.rng.integers(len(self.items)))
            yield self.items[i]
            self.items[i] = item
        self.rng.shuffle(self.items)
        yield from self.items
        self.items = []


class EpochStream:
    """The items of one worker's shards (`shard_items`, a subclass's), shuffled, repeated for ever, reshuffled per
    epoch: deterministic given (seed, worker, epoch). `position` is (epoch, items emitted in it) after the last
    item taken, and `forever(position)` lands exactly there again (reading, not training on, the part of that
    epoch before it): with the checkpointed counts, a resumed run sees the samples an uninterrupted one would."""

    def __init__(self, sources: list[ShardSource], rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle_buffer: int = 256, what: str = "example") -> None:
        self.shards = worker_shards(sources, rank, world)
        if not self.shards:
            raise NoTrainingData(f"worker {rank} of {world} has no shard: {len(sources)} shard(s) for {world} "
                                 f"workers; use at most {len(sources)} workers")
        self.rank, self.seed, self.shuffle_buffer, self.what = rank, seed, shuffle_buffer, what
        self.manifests: dict[Location, dict] = {}
        self.counts = DataCounts()          # of everything read so far (all passes)
        self.passes = 0                     # complete passes
        self.position = (0, 0)

    def _manifest(self, output: Location) -> dict:
        if output not in self.manifests:
            self.manifests[output] = output_manifest(output)
        return self.manifests[output]

    def shard_items(self, src: ShardSource, counts: DataCounts) -> Iterator:
        raise NotImplementedError

    def epoch(self, epoch: int = 0) -> Iterator:
        """One pass over this worker's shards: shard order and buffer seeded by (seed, worker, epoch)."""
        rng = np.random.default_rng([self.seed, self.rank, epoch])
        order = [self.shards[i] for i in rng.permutation(len(self.shards))]
        counts = self.counts

        def items() -> Iterator:
            for src in order:
                yield from self.shard_items(src, counts)

        yield from ShuffleBuffer(self.shuffle_buffer, rng)(items())
        self.passes += 1

    def forever(self, start: tuple[int, int] = (0, 0), state: dict | None = None) -> Iterator:
        """From `start` = (epoch, items already taken in it) on; `state` (a `state()` taken there) puts the counts
        back once the start is reached, so they are those of the interrupted run."""
        epoch, skip = start
        while True:
            emitted = 0
            for item in self.epoch(epoch):
                emitted += 1
                if emitted <= skip:
                    if emitted == skip and state is not None:
                        self._restore(state)
                    continue
                self.position = (epoch, emitted)
                yield item
            if emitted == 0:
                raise NoTrainingData(f"worker {self.rank}: its shards ({', '.join(s.shard.uri for s in self.shards)}) "
                                     f"gave no {self.what} (pictures missing? see the counts)")
            if skip and state is not None and emitted < skip:
                self._restore(state)
            epoch, skip = epoch + 1, 0

    def state(self) -> dict:
        return {"position": list(self.position), "counts": self.counts.to_json(), "passes": self.passes}

    def _restore(self, state: dict) -> None:
        for name, value in state["counts"].items():
            setattr(self.counts, name, value)
        self.passes = state["passes"]


class ExampleStream(EpochStream):
    """The crops of one worker's kept pairs, shuffled; `forever(start)` repeats them for ever, reshuffled."""

    def __init__(self, sources: list[ShardSource], filters: PairFilter, crop: CropSpec, rank: int = 0,
                 world: int = 1, seed: int = 0, shuffle_buffer: int = 256) -> None:
        super().__init__(sources, rank, world, seed, shuffle_buffer)
        self.filters, self.crop = filters, crop

    def shard_items(self, src: ShardSource, counts: DataCounts) -> Iterator[Example]:
        """What one shard contributes to the stream (subclasses stream other units: whole images)."""
        return shard_examples(src, self._manifest(src.output), self.filters, self.crop, counts)
