"""`ovmine eval`: load the ground truth, score the output, optionally the region encoder, and format."""
from __future__ import annotations

from typing import Any

import yaml

from mining.config import build_config
from mining.evaluation.ground_truth import load_ground_truth
from mining.evaluation.names import CategoryNames
from mining.evaluation.score import evaluate_output
from mining.sinks.reader import read_manifest
from mining.storage import Location, Where


def read_synonyms(uri: Where) -> dict[str, list[str]]:
    """YAML `category name: [synonym, ...]`."""
    doc = yaml.safe_load(Location.of(uri).read()) or {}
    if not isinstance(doc, dict) or not all(isinstance(v, list) for v in doc.values()):
        raise ValueError(f"{uri}: expected a mapping 'category: [synonym, ...]'")
    return {str(k): [str(s) for s in v] for k, v in doc.items()}


def evaluate(output: Where, gt_uri: Where, synonyms: Where | None = None, iou: float = 0.5,
             unknown_nouns: str | None = None, region_top1: bool = False, region_overrides: list[str] | None = None,
             progress: bool = True, allow_partial: bool = False, on_image=None) -> dict[str, Any]:
    """Score `output` against `gt_uri`. With `region_top1`, also classify every ground-truth mask with the
    run's region encoder (its config from the manifest; `region_overrides` are --set items on top, e.g.
    regions.pretrained=... to score other weights). Fails when the ground truth has fewer than half of the
    run's images (another world's, say), unless `allow_partial`. `on_image`: see evaluate_output."""
    if not 0 < iou <= 1:
        raise ValueError(f"--iou must be in (0, 1], got {iou}")
    gt = load_ground_truth(gt_uri)
    manifest = read_manifest(output)
    names = CategoryNames(gt.categories, read_synonyms(synonyms) if synonyms else None,
                          manifest["config"]["entities"]["spacy_model"])
    scorer = None
    if region_top1:
        from mining.evaluation.region_top1 import RegionTop1

        cfg = build_config(manifest["config"], region_overrides or [], origin=f"{output} manifest")
        scorer = RegionTop1(cfg, gt)
    report = evaluate_output(output, manifest, gt, names, iou, unknown_nouns, scorer, progress, on_image)
    report["ground_truth"] = str(gt_uri)
    refuse_partial(report["images"], report["images"] + report["images_not_in_ground_truth"], gt_uri, "run's",
                   allow_partial)
    if scorer is not None:
        report["region_top1"] = scorer.to_json()
    return report


def refuse_partial(matched: int, total: int, gt_uri: Where, whose: str, allow_partial: bool) -> None:
    """Scores over a small part of what was asked describe the wrong thing: fewer than half of the images found
    in the ground truth is an error naming both counts."""
    if total and 2 * matched < total and not allow_partial:
        raise ValueError(f"the ground truth {gt_uri} has only {matched} of the {whose} {total} images (matched by "
                         f"key or file-name stem): is it the right --gt? Pass --allow-partial to score those "
                         f"{matched} anyway")


def percent(v: float | None) -> str:
    """0.923 -> '92.3%'; None (nothing to divide by) -> 'n/a'."""
    return "n/a" if v is None else f"{100 * v:.1f}%"


def precision_detail(report: dict[str, Any]) -> str:
    """'69/75 judged; 4 unjudged: ...[; 2 duplicates: ...]': what precision divides, and what it leaves out
    (unjudged pairs) or counts wrong for being a second pair on one instance, so a reader can tell them apart."""
    text = (f"{report['correct_pairs']}/{report['judged_pairs']} judged; "
            f"{report['unjudged_pairs']} unjudged: noun names no category")
    duplicates = report.get("duplicate_pairs", 0)
    if duplicates:
        text += f"; {duplicates} duplicate{'s' if duplicates > 1 else ''}: a second pair on a matched instance"
    return text


def format_eval(report: dict[str, Any]) -> str:
    lines = [
        f"evaluated {report['output']} against {report['ground_truth']} (mask IoU >= {report['iou_threshold']})",
        f"  images             {report['images']} of the run's "
        f"{report['images'] + report['images_not_in_ground_truth']} are in the ground truth "
        f"({report['images_with_pairs']} with pairs)",
        f"  pairs              {report['pairs']}",
        f"  precision          {percent(report['precision'])}  ({precision_detail(report)})",
        f"  recall             {percent(report['recall'])}  ({report['recalled']}/{report['minable']} "
        f"minable instances)",
        f"  noun recall        {percent(report['noun_recall'])}  ({report['noun_recalled']}/{report['noun_minable']} "
        f"mentioned present categories)",
    ]
    if "region_top1" in report:
        r = report["region_top1"]
        lines.append(f"  region top-1       {percent(r['top1'])} of {r['masks']} ground-truth masks "
                     f"(chance {percent(r['chance'])})")
    lines.append(f"  {'category':<18}{'pairs':>6}{'precision':>11}{'minable':>9}{'recall':>9}" +
                 ("   top-1" if "region_top1" in report else ""))
    top1 = report.get("region_top1", {}).get("per_category", {})
    for name, t in report["per_category"].items():
        lines.append(f"  {name:<18}{t['pairs']:>6}{percent(t['precision']):>11}{t['minable']:>9}"
                     f"{percent(t['recall']):>9}" + (f"{percent(top1.get(name)):>8}" if top1 else ""))
    return "\n".join(lines)
