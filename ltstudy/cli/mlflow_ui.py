"""The MLflow UI `ltstudy ui` serves: MLflow's own app, opening in its model-training workflow.

MLflow 3.17's UI shows one of two workflows: model training (Runs, Models) or
GenAI ("Evaluations", Judges, Prompts). It takes the workflow from the URL's
`workflowType` parameter, else from the browser's localStorage key
`mlflow.workflowType_v1`, which is GenAI until the user flips the switch; the
experiment's `mlflow.experimentKind` tag and whatever a run holds are not read
(its bundle's workflow provider). A link to a run does not carry the parameter,
so clicking a trial on the study's runs page switched the UI to GenAI. This app
is MLflow's, with one script added to the top of its page: it remembers the
workflow a URL names, and stores model training when nothing is stored yet,
before MLflow's code reads it (a workflow the user chose in the UI is kept).

`ltstudy ui` runs it with `mlflow ui --app-name ltstudy`: MLflow finds app
plugins through the `mlflow.app` entry point group, which `plugin_path` provides
(this module is imported by MLflow's server processes; it imports MLflow's app
only when the server starts).
"""

from __future__ import annotations

from pathlib import Path

WORKFLOW_KEY = "mlflow.workflowType_v1"  # MLflow's useLocalStorage({key: "mlflow.workflowType", version: 1})
SCRIPT = ("<script>(function(){try{var k='" + WORKFLOW_KEY + "',"
          "m=/[?&]workflowType=(genai|machine_learning)\\b/.exec(location.hash+location.search);"
          "if(m)localStorage.setItem(k,JSON.stringify(m[1]));"
          "else if(localStorage.getItem(k)===null)localStorage.setItem(k,JSON.stringify('machine_learning'))"
          "}catch(e){}})()</script>").encode()
PAGES = ("/", "/index.html")  # (the UI routes in the URL's fragment: every view loads this page)


class ModelTrainingUI:
    """An ASGI app: MLflow's, with SCRIPT at the top of its page (see the module docstring)."""

    def __init__(self):
        self._mlflow = None

    def mlflow_app(self):
        if self._mlflow is None:
            from ..study.mlflow_api import server_app  # what `mlflow ui` serves

            self._mlflow = server_app()
        return self._mlflow

    async def __call__(self, scope, receive, send):
        app = self.mlflow_app()
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in PAGES:
            await app(scope, receive, send)
            return
        # The whole page, uncompressed, never "not modified": the script goes into every copy a browser keeps.
        asked = [(k, v) for k, v in scope["headers"]
                 if k.lower() not in (b"accept-encoding", b"if-none-match", b"if-modified-since")]
        start: dict = {}
        body: list[bytes] = []

        async def keep(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await app({**scope, "headers": asked}, receive, keep)
        page = b"".join(body)
        if start.get("status") == 200 and b"<head>" in page:
            page = page.replace(b"<head>", b"<head>" + SCRIPT, 1)
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in (b"content-length", b"etag", b"last-modified", b"cache-control")]
        headers += [(b"content-length", str(len(page)).encode()), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": start.get("status", 500), "headers": headers})
        await send({"type": "http.response.body", "body": page})


app = ModelTrainingUI()

PLUGIN = "ltstudy"


def plugin_path(folder: Path) -> Path:
    """Make `folder` (to be put on the server's PYTHONPATH) declare this app as MLflow's app plugin PLUGIN."""
    dist = folder / "ltstudy_mlflow_ui-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ltstudy-mlflow-ui\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[mlflow.app]\n{PLUGIN} = {__name__}:app\n")
    return folder
