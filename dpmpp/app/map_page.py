"""The prototype-space map's page side: a gr.HTML template and its script, drawn by plotly.js served locally."""

from __future__ import annotations

from pathlib import Path

import plotly

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"  # served locally: no CDN
HEAD = f'<script src="/gradio_api/file={PLOTLY_JS}"></script>'  # the page's <head> addition that loads it

# The page side of the map (a gr.HTML template and its js_on_load): plotly.js draws the figure in props.value,
# redrawn when its version changes; hover shows the crop, a click asks Python for nearest neighbours, a lasso or
# box selection fills the linked grid.
UMAP_TEMPLATE = (
    "<div class='umap-wrap' style='position:relative'><div class='umap-plot' style='height:560px'></div>"
    "<div class='umap-thumb' style='position:absolute;display:none;pointer-events:none;background:#fff;"
    "border:1px solid #888;padding:2px;z-index:10'></div></div>"
)
UMAP_JS = """
let shown = -1;
function send(event) { props.value = {...props.value, event: event}; trigger('submit'); }
function draw() {
  const v = props.value;
  if (!v || !v.figure || v.version === shown || !window.Plotly) return;
  shown = v.version;
  const fig = JSON.parse(v.figure);
  const div = element.querySelector('.umap-plot');
  const thumb = element.querySelector('.umap-thumb');
  Plotly.react(div, fig.data, fig.layout, {displaylogo: false});
  if (div._dpmpp) return;
  div._dpmpp = true;
  const row = (p) => (p && p.customdata !== undefined && p.customdata !== null ? p.customdata[0] : undefined);
  div.on('plotly_hover', (e) => {
    const p = e.points[0]; const i = row(p); const url = i === undefined ? '' : (props.value.thumbs || [])[i];
    if (!url) return;
    thumb.innerHTML = `<img src="${url}" style="height:128px;display:block">`;
    thumb.style.left = (e.event.offsetX + 16) + 'px'; thumb.style.top = (e.event.offsetY + 16) + 'px';
    thumb.style.display = 'block';
  });
  div.on('plotly_unhover', () => { thumb.style.display = 'none'; });
  div.on('plotly_click', (e) => {
    const i = row(e && e.points && e.points[0]);
    if (i !== undefined) send({type: 'click', point: i});
  });
  div.on('plotly_selected', (e) => {  // the trail and the legend have no index: skipped
    if (!e || !e.points) return;
    send({type: 'select', points: e.points.map(row).filter((i) => i !== undefined)});
  });
}
setInterval(draw, 250);
"""
