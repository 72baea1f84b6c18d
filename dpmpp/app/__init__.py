"""The Gradio app over the facade (dpmpp.api, dpmpp.explorer, dpmpp.viz): one module per view, plus what they share.

`layout.build_demo` builds the page; `app.py` at the top of the repository parses the flags and launches it. This
package and `app.py` are the only places that import gradio (tests/test_architecture.py).

- `common`: the server's settings, what visitors are told (messages without server paths, the views' texts)
- `classroom`: who a visitor is (teacher or student), idle sessions, the upload quota
- `state`: what sessions share: the listed checkpoints, and the heavy objects cached per checkpoint
- `widgets`: image inputs that refuse uploads from their header before anything decodes them
- `map_page`: the prototype-space map's page side (HTML template and script) and the local plotly.js
- `views/`: model, query (with `occlude`), mask, retrieval, space, failures (with `cases`); each lays out its part
  of the page (`build`) and wires its events (`wire`)
- `layout`: the page, from the views
"""
