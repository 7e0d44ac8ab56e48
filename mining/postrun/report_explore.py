"""The report's explorer section (controls, the sampled pairs as JSON, the per-image view, the audit bar) and,
with ground truth, the per-noun precision table. The script lives in assets/explore.js and is inlined, so the
page stays one static file."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from mining.evaluation.run import percent
from mining.postrun.explore import Truth

SCRIPT = Path(__file__).with_name("assets") / "explore.js"
PAGE_SIZES = (12, 24, 48, 96)
SORTS = (("order", "sample order (mark in this order to audit)"), ("similarity-asc", "similarity, lowest first"),
         ("similarity-desc", "similarity, highest first"), ("margin-asc", "margin, lowest first"),
         ("margin-desc", "margin, highest first"), ("area-asc", "area, smallest first"),
         ("area-desc", "area, largest first"), ("noun", "noun"))

STYLE = """
#explore-body .controls { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin-bottom: 8px; }
#explore-body .controls input[type=number] { width: 5.5em; } #explore-body .pager { margin: 8px 0; }
.verdict button { margin: 4px 6px 0 0; } .verdict button[aria-pressed=true] { font-weight: bold; }
.verdict .mark-right[aria-pressed=true] { background: #c8efc8; }
.verdict .mark-wrong[aria-pressed=true] { background: #f6c6c6; }
figure.card.right { border-color: #3a3; } figure.card.wrong { border-color: #c33; }
.truth.right { color: #176b17; } .truth.wrong { color: #a11; } .truth.other { color: #777; }
#audit-bar { position: sticky; bottom: 0; background: #f4f7ff; border: 1px solid #ccd; padding: 6px; margin-top: 8px; }
#image-view { position: fixed; inset: 24px; background: #fff; border: 1px solid #888; z-index: 5; overflow: auto;
  padding: 12px; box-shadow: 0 4px 24px rgba(0,0,0,.3); }
#image-view .view-body { display: flex; gap: 18px; flex-wrap: wrap; } #image-view .view-picture { width: 480px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: middle; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _option(value: str, label: str) -> str:
    return f'<option value="{_esc(value)}">{_esc(label)}</option>'


def explore_section(data: dict[str, Any], meta: dict[str, Any], budget: int) -> str:
    """`data` from explorer_data; `meta`: output, config_hash, seed, audit_file (the saved file's name)."""
    if not data["pairs"]:
        return "<p>No pairs.</p>"
    nouns = "".join(_option(n, f"{n} ({shown} of {total})" if shown < total else f"{n} ({total})")
                    for n, shown, _, total in data["nouns"] if shown)
    statuses = [("all", "all"), ("unmarked", "not marked yet"), ("right", "marked right"), ("wrong", "marked wrong")]
    if any("truth" in p for p in data["pairs"]):
        statuses += [("truth:right", "ground truth: right"), ("truth:wrong", "ground truth: wrong"),
                     ("truth:other", "ground truth: unjudged")]
    sampled = sum(shown for _, shown, _, _ in data["nouns"])
    total = sum(t for *_, t in data["nouns"])
    used, shards = data["shards"]
    where = (f" of {used} of the output's {shards} shards, chosen at random (--explore-shards: each picture is read "
             f"back from its input shard)" if used < shards else "")
    payload = json.dumps({**data, "meta": meta}, separators=(",", ":")).replace("</", "<\\/")
    return f"""<p>{sampled} of the {total} pairs ({'all of them' if sampled == total else
        f'every pair of the rarer nouns{where}, a uniform sample of the frequent ones; --explore {budget} sets the '
        f'budget'}).
Filter, sort and page; click a picture for the image with all its masks. To audit, mark pairs right or wrong in
<i>sample order</i> and save the audit file: <code>ovmine stats RUN --audit FILE</code> estimates precision per
noun, <code>ovmine curate RUN --audit FILE --min-precision P</code> denies the nouns below P.</p>
<div class=controls>
<label>noun <select id=x-noun><option value="">all nouns</option>{nouns}</select></label>
<label>search <input id=x-text type=search placeholder="noun, phrase or key"></label>
<label>similarity <input id=x-sim-min type=number step=0.01 placeholder=min> to
  <input id=x-sim-max type=number step=0.01 placeholder=max></label>
<label>margin ≥ <input id=x-margin-min type=number step=0.01></label>
<label>area <input id=x-area-min type=number step=1 placeholder=min> to
  <input id=x-area-max type=number step=1 placeholder=max> px</label>
<label>show <select id=x-status>{''.join(_option(v, label) for v, label in statuses)}</select></label>
<label>sort <select id=x-sort>{''.join(_option(v, label) for v, label in SORTS)}</select></label>
<label>per page <select id=x-page-size>{''.join(_option(str(n), str(n)) for n in PAGE_SIZES)}</select></label>
</div>
<p id=x-noun-note class=detail></p>
<div class=pager><button type=button id=x-prev>previous</button> <span id=x-page></span>
  <button type=button id=x-next>next</button></div>
<div class="gallery small" id=x-cards></div>
<div id=audit-bar><span id=x-marked></span> · <button type=button id=x-save>save audit file</button>
  <label>load audit file <input type=file id=x-load accept=".json,application/json"></label>
  <button type=button id=x-clear>forget marks</button></div>
<div id=image-view hidden><button type=button class=close>close (Esc)</button><div class=view-body></div></div>
<script type="application/json" id=explore-data>{payload}</script>
<script>{SCRIPT.read_text()}</script>"""


def truth_section(truth: Truth, ground_truth: str) -> str:
    """Per-noun precision over all pairs, from `ovmine eval`'s scoring (the same definitions)."""
    r = truth.report
    head = "<tr><th>noun</th><th>pairs</th><th>judged</th><th>right</th><th>duplicates</th><th>precision</th></tr>"
    rows = "".join(
        f'<tr><th><a href="#explore" data-explore-noun="{_esc(row["noun"])}">{_esc(row["noun"])}</a></th>'
        f'<td>{row["pairs"]}</td><td>{row["judged"]}</td><td>{row["right"]}</td><td>{row["duplicates"]}</td>'
        f'<td>{percent(row["precision"])}</td></tr>' for row in truth.noun_rows())
    return (f"<p>Against {_esc(ground_truth)} (the scoring of <code>ovmine eval</code>): precision "
            f"{percent(r['precision'])} of {r['judged_pairs']} judged pairs, recall {percent(r['recall'])} of "
            f"{r['minable']} minable instances; {r['unjudged_pairs']} pairs unjudged. The explorer marks each pair "
            f"right or wrong.</p><table id=truth-nouns><caption>precision per noun</caption>{head}{rows}</table>")
