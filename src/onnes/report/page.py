"""The campaign page: one static HTML file beside its figures, pictures and CIFs
(relative links, no network, no JavaScript libraries)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; vertical-align: middle; }
th { background: #f3f3f3; } td.text { text-align: left; }
img.figure { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
img.structure { width: 130px; height: 130px; object-fit: contain; }
img.hull { width: 210px; object-fit: contain; }
img.broken { outline: 3px solid #c00; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
.muted { color: #666; font-size: 0.9em; }
"""

# Marks images that fail to load (e.g. the page was copied without its folders) and
# records what rendered in data-rendered, which the browser test reads back.
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  broken.forEach(function (i) { i.classList.add('broken'); });
  document.body.dataset.rendered = JSON.stringify({
    images: images.length,
    broken: broken.map(function (i) { return i.getAttribute('src'); }),
    candidate_rows: document.querySelectorAll('#candidates tbody tr').length,
    funnel_rows: document.querySelectorAll('#funnel tbody tr').length,
    stability_rows: document.querySelectorAll('#stability tbody tr').length,
    protocol_rows: document.querySelectorAll('#protocol tbody tr').length,
    quality_rows: document.querySelectorAll('#quality tbody tr').length,
    steering_rows: document.querySelectorAll('#steering tbody tr').length,
    predictor_rows: document.querySelectorAll('#tc_predictor tbody tr').length,
    dft_rows: document.querySelectorAll('#dft tbody tr').length,
    rounds_rows: document.querySelectorAll('#rounds tbody tr').length,
    hull_plots: document.querySelectorAll('#candidates img.hull').length,
    sections: Array.prototype.map.call(document.querySelectorAll('h2'), function (h) { return h.textContent; })
  });
});
"""

STATUS_COLORS = {"success": "#d6f5d6", "failed": "#f8d7d7", "unconverged": "#fbe8c8", "skipped": "#eee"}


def _cell(value, css: str = "") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        text = "–"
    elif isinstance(value, float):
        text = f"{value:.3g}"
    else:
        text = html.escape(str(value))
    return f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>"


def table_html(frame: pd.DataFrame, table_id: str, text_columns: tuple[str, ...] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(_cell(row[c], "text" if c in text_columns else "") for c in frame.columns) + "</tr>"
        for _, row in frame.iterrows())
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def candidates_html(frame: pd.DataFrame, assets: dict[str, dict[str, str]]) -> str:
    """The ranked candidates with picture, CIF link, expected Tc with P(superconducting) and
    the 90 % conformal interval of Tc if superconducting, why the predictor thinks so
    (the metallicity gate's P(insulator), the out-of-domain score, the three nearest known
    superconductors with their Tc), and DFT status."""
    head = ("<tr><th>rank</th><th>structure</th><th>formula</th><th>space group<br>0.01 / 0.1 Å</th>"
            "<th>source</th><th>hull</th><th>expected Tc (K)</th><th>why</th><th>DFT</th><th>CIF</th></tr>")
    rows = []
    for _, row in frame.iterrows():
        files = assets[row.id]
        tc = f"{row.tc_pred_mean:.1f}"
        if pd.notna(row.get("tc_p_superconducting")):
            tc += f'<br><span class="muted">P(SC) {row.tc_p_superconducting:.2f}'
            if pd.notna(row.get("tc_lo_90")):
                tc += f"; 90 % if SC: {row.tc_lo_90:.0f}–{row.tc_hi_90:.0f}"
            tc += "</span>"
        if bool(row.tc_ood):
            tc += ' <span class="muted" title="outside the predictor\'s training domain">(OOD)</span>'
        why = []
        if pd.notna(row.get("tc_p_insulator")):
            why.append(f"P(insulator) {row.tc_p_insulator:.2f}")
        if pd.notna(row.get("tc_ood_score")):
            why.append(f"OOD score {row.tc_ood_score:.2f}")
        if isinstance(row.get("tc_nearest_superconductors"), str) and row.tc_nearest_superconductors:
            why.append("nearest known: " + html.escape(row.tc_nearest_superconductors))
        why_cell = f'<td class="text why">{"<br>".join(why)}</td>'
        status = html.escape(str(row.dft_status))
        if row.dft_note:
            status += f'<br><span class="muted">{html.escape(str(row.dft_note)[:80])}</span>'
        if pd.notna(row.dft_energy_per_atom):
            status += f'<br><span class="muted">{row.dft_energy_per_atom:.3f} eV/atom</span>'
        color = STATUS_COLORS.get(row.dft_status, "#fff")
        hull_cell = f'{row.e_above_hull:.3f} eV/atom<br><span class="muted">{html.escape(str(row.hull_context))}</span>'
        if "hull" in files:
            hull_cell += f'<br><img class="hull" src="{html.escape(files["hull"])}" alt="hull of {html.escape(row.formula)}">'
        groups = f"{html.escape(str(row.space_group_tight))}<br>{html.escape(str(row.space_group))}"
        rows.append(
            f"<tr><td>{row['rank']}</td>"
            f'<td><img class="structure" src="{html.escape(files["png"])}" alt="{html.escape(row.formula)}"></td>'
            f'<td class="text">{html.escape(row.formula)}</td><td class="text">{groups}</td>'
            f'<td class="text">{html.escape(row.source)}<br><span class="muted">{html.escape(row.id)}</span></td>'
            f'<td class="text hull">{hull_cell}</td><td>{tc}</td>{why_cell}'
            f'<td style="background:{color}">{status}</td>'
            f'<td><a href="{html.escape(files["cif"])}" download>CIF</a><br>'
            f'<a href="{html.escape(files["cif_symmetrised"])}" download>symmetrised</a></td></tr>')
    return f'<table id="candidates"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _dict_table(items: dict, table_id: str) -> str:
    frame = pd.DataFrame({"name": list(items), "value": [str(v) for v in items.values()]})
    return table_html(frame, table_id, text_columns=("name", "value"))


def _flatten(block: dict, prefix: str = "") -> dict:
    """A nested protocol block as dotted keys."""
    out = {}
    for key, value in block.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class PageContent:
    campaign: str
    funnel: pd.DataFrame
    stability: pd.DataFrame
    protocol: dict
    candidates: pd.DataFrame
    assets: dict[str, dict[str, str]]
    figures: dict[str, str]
    provenance: dict
    config_yaml: str
    notes: dict[str, str]
    quality: pd.DataFrame
    quality_protocol: str
    steering: pd.DataFrame
    predictor: pd.DataFrame
    dft: pd.DataFrame
    rounds: pd.DataFrame
    map_figure: bool = False


def _table_or(frame: pd.DataFrame, table_id: str, empty: str) -> str:
    """The table (CSV link beside it), or a line saying why there is none."""
    if not len(frame):
        return f"<p class=\"muted\">{html.escape(empty)}</p>"
    return (table_html(frame, table_id, text_columns=tuple(frame.columns))
            + f'<p class="muted">As CSV: <a href="{table_id}.csv">{table_id}.csv</a></p>')


def render(c: PageContent) -> str:
    git = c.provenance["git"]
    commit = git["commit"][:12] + (" (with uncommitted changes)" if git["dirty"] else "")
    figure = lambda key, alt: (  # noqa: E731
        f'<img class="figure" src="{html.escape(c.figures[key])}" alt="{alt}"> <span class="muted">'
        f'<a href="{html.escape(c.figures[key][:-4])}.svg">SVG</a></span>')
    candidates_part = (candidates_html(c.candidates, c.assets) if len(c.candidates)
                       else "<p>No confirmed candidate (MSUN after both MLIPs) had a Tc prediction.</p>")
    quality_protocol = f" Counts behind COV and the distances: {c.quality_protocol}." if c.quality_protocol else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Onnes campaign {html.escape(c.campaign)}</title>
<style>{STYLE}</style></head>
<body>
<h1>Onnes campaign <code>{html.escape(c.campaign)}</code></h1>
<p class="muted">onnes {html.escape(c.provenance["versions"]["onnes"])}, commit <code>{html.escape(commit)}</code>,
seed {c.provenance["seeds"]["campaign"]}. Tables: <a href="funnel.csv">funnel.csv</a>,
<a href="quality.csv">quality.csv</a>, <a href="stability.csv">stability.csv</a>,
<a href="steering.csv">steering.csv</a>, <a href="tc_predictor.csv">tc_predictor.csv</a>,
<a href="dft.csv">dft.csv</a>, <a href="rounds.csv">rounds.csv</a>, <a href="candidates.csv">candidates.csv</a>; provenance:
<a href="provenance.json">provenance.json</a>, <a href="config.yaml">config.yaml</a>.</p>

<h2>Funnel</h2>
<p>{html.escape(c.notes["funnel"])}</p>
{table_html(c.funnel, "funnel", text_columns=("source",))}
{figure("funnel", "funnel per source")}

<h2>Generation quality against the baselines</h2>
<p>{html.escape(c.notes["quality"] + quality_protocol)}</p>
{_table_or(c.quality, "quality", "No screening summary in this campaign.")}

<h2>Stability: SUN and MSUN</h2>
<p>{html.escape(c.notes["stability"])}</p>
{table_html(c.stability, "stability", text_columns=tuple(c.stability.columns))}
<details><summary>Protocol</summary>{_dict_table(_flatten(c.protocol), "protocol")}</details>

<h2>Steering toward high Tc</h2>
<p>{html.escape(c.notes["steering"])}</p>
{_table_or(c.steering, "steering", "No steering comparison in this campaign (no guided or fine-tuned model "
                                     "beside an unguided one, or the Tc stage is off).")}

<h2>Rounds</h2>
<p>{html.escape(c.notes["rounds"])}</p>
{_table_or(c.rounds, "rounds", "One round in this campaign (loop.rounds is 1).")}

<h2>Map</h2>
<p>{html.escape(c.notes["map"])}</p>
{(figure("map", "composition map of known crystals and each source's samples")
  + ' <span class="muted">As CSV: <a href="map.csv">map.csv</a></span>') if c.map_figure
 else '<p class="muted">No map in this campaign (report.map.enabled is false).</p>'}

<h2>The Tc predictor's own figures</h2>
<p>{html.escape(c.notes["predictor"])}</p>
{_table_or(c.predictor, "tc_predictor", "The Tc stage is off in this campaign.")}
{figure("predictor", "Tc predictor parity and calibration on held-out compositions")}

<h2>DFT-verified candidates</h2>
<p>{html.escape(c.notes["dft"])}</p>
{_table_or(c.dft, "dft", "No DFT calculation in this campaign.")}

<h2>Top candidates</h2>
<p>{html.escape(c.notes["candidates"])}</p>
{candidates_part}

<h2>Training</h2>
{figure("training", "training curves")}

<h2>Distributions</h2>
{figure("distributions", "distributions of Tc, energy above hull, density and number of elements")}
{figure("space_groups", "space groups of the relaxed structures")}

<h2>Provenance</h2>
<h3>Packages</h3>{_dict_table(c.provenance["versions"], "versions")}
<h3>Data (sha256 of the raw files)</h3>{_dict_table(c.provenance["data"], "data")}
<h3>Seeds</h3>{_dict_table(c.provenance["seeds"], "seeds")}
<h3>Hardware (report job)</h3>{_dict_table(c.provenance["hardware"], "hardware")}
<details><summary>Config used (validated, defaults filled)</summary><pre>{html.escape(c.config_yaml)}</pre></details>
<script>{CHECK_SCRIPT}</script>
<!-- provenance: {html.escape(json.dumps(git))} -->
</body></html>
"""
