"""The import direction of docs/design.md §2, checked on the source (boundaries erode silently otherwise)."""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dpmpp"
APP = PACKAGE / "app"
MAX_APP_MODULE_LINES = 220  # one view, or one thing the views share, per module


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_app_package_imports_gradio_and_only_cli_imports_argparse():
    for path in PACKAGE.rglob("*.py"):
        modules = imported_modules(path)
        if not path.is_relative_to(APP):
            assert not any(m.split(".")[0] == "gradio" for m in modules), path
        # the load benchmark speaks Gradio's queue protocol over httpx: no library module needs gradio_client
        assert not any(m.split(".")[0] == "gradio_client" for m in modules), path
        if path.name != "cli.py" or path.is_relative_to(APP):
            assert "argparse" not in modules, path


def test_app_views_import_only_the_facade():
    """The app reaches the library through dpmpp.api, dpmpp.explorer and dpmpp.viz; otherwise it uses the standard
    library, gradio (with its starlette), numpy, PIL and plotly."""
    allowed_roots = set(sys.stdlib_module_names) | {"gradio", "starlette", "numpy", "PIL", "plotly", "dpmpp"}
    allowed_inside = ("dpmpp.api", "dpmpp.explorer", "dpmpp.viz", "dpmpp.app")
    paths = sorted(APP.rglob("*.py"))
    assert len(paths) > 10, "the app package is missing"
    for path in paths:
        for module in imported_modules(path):
            assert module.split(".")[0] in allowed_roots, (path, module)
            if module.split(".")[0] == "dpmpp":
                assert any(module == a or module.startswith(a + ".") for a in allowed_inside), (path, module)


def test_app_modules_are_small():
    for path in APP.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_APP_MODULE_LINES, f"{path.relative_to(PACKAGE)}: {lines} lines"


def test_model_depends_only_on_its_frameworks_config_and_image_helpers():
    """Models: torch and open_clip, the pretrained peers' runtimes, numpy/PIL for their inputs; within the package,
    other models, the config, bundled paths and the image helpers (decoding, normalisation constants)."""
    allowed_roots = set(sys.stdlib_module_names) | {
        "torch",
        "open_clip",
        "safetensors",
        "huggingface_hub",
        "numpy",
        "PIL",
        "onnx",
        "onnxruntime",
        "openvino",
        "dpmpp",
    }
    allowed_inside = ("dpmpp.model", "dpmpp.config", "dpmpp.paths", "dpmpp.data.images", "dpmpp.data.transforms")
    for path in (PACKAGE / "model").rglob("*.py"):
        for module in imported_modules(path):
            assert module.split(".")[0] in allowed_roots, (path, module)
            if module.startswith("dpmpp."):
                assert module.startswith(allowed_inside), (path, module)


def test_lower_layers_do_not_import_upper_layers():
    upper = {"dpmpp.api", "dpmpp.cli", "dpmpp.engine", "dpmpp.app"}
    for sub in ("model", "data", "eval", "losses", "viz"):
        for path in (PACKAGE / sub).rglob("*.py"):
            bad = {m for m in imported_modules(path) if any(m == u or m.startswith(u + ".") for u in upper)}
            assert not bad, (path, bad)
