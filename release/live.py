"""What a release asks of the server it changes: load a model (explicit mode), and wait until a change serves.

Explicit mode loads a model only on the repository load API, which returns once the model serves. Poll mode refuses
that API and picks a change up at its next poll; then only waiting tells when it serves. The load API is one of the
server's restricted endpoints: it needs the server's admin key.
"""

import time

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client.admin import admin_headers

SERVE_TIMEOUT_S = 300


class Live:
    def __init__(self, url: str, admin_key: str | None = None):
        self.client = httpclient.InferenceServerClient(url)
        self.headers = admin_headers("http", admin_key) if admin_key else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.client.close()

    def check(self) -> None:
        """Raise unless the server answers and takes this key for its repository API (load, index)."""
        self.client.get_model_repository_index(headers=self.headers)

    def load(self, model: str) -> None:
        """Explicit mode: load `model` from the repository now (Triton also reloads the ensembles using it)."""
        try:
            self.client.load_model(model, headers=self.headers)
        except InferenceServerException as error:
            if "polling is enabled" not in str(error):
                raise

    def ready(self, model: str, version: int | None = None) -> bool:
        return self.client.is_model_ready(model, "" if version is None else str(version))

    def config(self, model: str) -> dict:
        """The config of the model as it serves now (not as the repository has it)."""
        return self.client.get_model_config(model)

    def wait(self, what: str, condition, *args) -> None:
        """Return once condition(*args) holds; TimeoutError after SERVE_TIMEOUT_S."""
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while not condition(*args):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not happen in {SERVE_TIMEOUT_S} s")
            time.sleep(0.2)


def make_live(server: str, models: list[tuple[str, int | None]], admin_key: str | None = None) -> None:
    """Return once each (model, version or None for any) serves, members before the ensembles that use them."""
    with Live(server, admin_key) as live:
        for model, version in models:
            live.load(model)
            live.wait(f"{model} version {version} serving", live.ready, model, version)
