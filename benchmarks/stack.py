"""The services a benchmark runs (MLflow with the real model, nx-27017, MLServers, FastAPI peers)
on free ports under one temporary folder, all stopped on exit, on Ctrl-C and on SIGTERM; and the
benchmark's one `Context` on them (`Stack.context`), where its clients come from.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.harness import Party, Target
from telescore.io.datasets import DATASET_FILE

if TYPE_CHECKING:
    from telescore.io.context import Context

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATASET = PROJECT_ROOT / DATASET_FILE
MODEL, DATABASE, HOST = "telemarketing", "benchmark", "127.0.0.1"
INFER_PATH = f"/v2/models/{MODEL}/infer"
SHIPPER = "telescore.serving.shipper"
"""In the command line of the shipper process MLServer starts (in MLServer's process group)."""
SERVER_ENV = {
    # One BLAS/OpenMP thread in every server, whatever the caller's environment says.
    "OMP_NUM_THREADS": "1",
    # Ours before Deepchecks' own top-level `benchmarks` package (constant runtime, peers).
    "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.getenv("PYTHONPATH")])),
}
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads here too
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # it would garble the output


@dataclass(frozen=True)
class Server:
    """One server (started by `Stack.start`) and where to reach it."""

    label: str
    process: Any
    """Its ServiceProcess."""
    url: str
    """REST base URL (a mongodb:// URI for nx-27017)."""
    grpc: str = ""
    metrics: str = ""
    repository: Path | None = None
    logged: bool = False
    """The prediction log is on: cells wait for its shipping (`drain`)."""

    @property
    def pid(self) -> int:
        return int(self.process.process.pid)

    def parties(self, mongodb: Server, name: str = "server") -> dict[str, Party]:
        """This server's process group (as `name`), its shipper apart, and MongoDB's."""
        shipper, db = Party(self.pid, only=SHIPPER), Party(mongodb.pid)
        return {name: Party(self.pid, without=SHIPPER), "shipper": shipper, "db": db}

    def target(self, kind: str, body: Any, mongodb: Server, path: str = INFER_PATH) -> Target:
        """Requests to this server, with its CPU parties and, when it logs, its drain."""
        address = self.url + path if kind == "http" else self.grpc
        settle = self.drain if self.logged else None
        return Target(kind, address, body, self.parties(mongodb), settle)

    def log_counts(self) -> dict[str, float]:
        """Return MLServer's telescore_prediction_log_* metrics, by short name."""
        from telescore.io.serving_client import read_metrics

        metrics = read_metrics(self.metrics, "telescore_prediction_log_", timeout=10)
        return {name.removesuffix("_total"): value for name, value in metrics.items()}

    def drain(self) -> dict[str, float]:
        """Read the backlog a cell left, wait until it is shipped; return both and the wait."""
        # `spooled` is the shipper's last report (every 0.25 s); journaled - written is now.
        counts = self.log_counts()
        spooled, unshipped = counts["spooled"], counts["journaled"] - counts["written"]
        return {"spooled": spooled, "unshipped": unshipped, "drain s": self.wait_drained()}

    def wait_drained(self, timeout: float = 300.0) -> float:
        """Wait until the shipper has written every journaled row; return the seconds waited
        (to about the shipper's report interval, 0.25 s)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            counts = self.log_counts()
            if counts["spooled"] == 0 and counts["written"] >= counts["journaled"]:
                break
            time.sleep(0.1)
        return time.perf_counter() - started


class Stack(contextlib.ExitStack):
    """A temporary folder and the services started in it, all stopped on the way out."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.dir = name, Path()
        self.servers: dict[str, Server] = {}

    def __enter__(self) -> Stack:
        super().__enter__()
        prefix = f"telescore-{self.name}-"
        self.dir = Path(self.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM, interrupt))
        return self

    def start(self, *servers: Server) -> None:
        """Start servers in parallel, wait until each is healthy; they stop on exit."""
        for server in servers:
            self.callback(server.process.stop)
            server.process.launch()
            self.servers[server.label] = server
        for server in servers:
            server.process.wait_healthy()

    @cached_property
    def context(self) -> Context:
        """The benchmark's one Context, on this stack's MLflow and nx-27017 (started if not yet)."""
        from pydantic import SecretStr

        from telescore.io.context import Context
        from telescore.settings import MlflowSettings, MongoSettings, ProjectSettings, Settings

        mlflow, mongodb = self.mlflow(), self.mongodb().url
        no_env_file: Any = {"_env_file": None}  # no developer's .env
        settings = Settings(
            project=ProjectSettings(state_dir=self.dir / "state", host=HOST, **no_env_file),
            mlflow=MlflowSettings(tracking_uri=mlflow, experiment="benchmark", **no_env_file),
            mongodb=MongoSettings(uri=SecretStr(mongodb), database=DATABASE, **no_env_file),
            **no_env_file,
        )
        return self.enter_context(Context(settings))

    def champion(self) -> tuple[Any, Registered]:
        """Register the real model as `champion` (MLflow started if not yet): features, version."""
        features, labels = load_dataset()
        registered = register(self.context, features, labels)
        self.context.registry.set_alias("champion", registered.version)
        return features, registered

    def mlflow(self) -> str:
        """Start an MLflow server (once), make it this process's registry; return its URI.

        This process (and what it starts) signs in as the writer, as `telescore up` has it.
        """
        from telescore.services import mlflow_auth
        from telescore.services.embedded import mlflow_server
        from telescore.services.processes import free_port

        if "mlflow" not in self.servers:
            port = free_port()
            uri = f"http://{HOST}:{port}"
            self.start(Server("mlflow", mlflow_server(self.dir, port, HOST), uri))
            mlflow_auth.provision_embedded(uri, self.dir, "telemarketing", "benchmark")
            os.environ["MLFLOW_TRACKING_URI"] = uri
            os.environ.update(mlflow_auth.writer(self.dir).env())
        return self.servers["mlflow"].url

    def mongodb(self) -> Server:
        """Start nx-27017 (once); its `url` is the mongodb:// URI."""
        from telescore.services.embedded import mongodb_server
        from telescore.services.processes import free_port

        if "nx-27017" not in self.servers:
            port = free_port()
            process = mongodb_server(self.dir, port, HOST)
            self.start(Server("nx-27017", process, f"mongodb://{HOST}:{port}"))
        return self.servers["nx-27017"]

    def mlserver(
        self, label: str, mongodb: Server | None = None, runtime: dict[str, Any] | None = None
    ) -> Server:
        """Define telescore's MLServer serving `champion`, logging to `mongodb` if given."""
        from telescore.jobs.model_repository import write_registry_repository
        from telescore.serving.options import RuntimeOptions

        home, options = self._mlserver_home(label)
        log = {"prediction_log": mongodb is not None, "journal_dir": home / "journal"}
        runtime_options = RuntimeOptions(**log, **(runtime or {}))
        registry = self.context.registry
        write_registry_repository(home / "repository", registry, options, runtime_options)
        # The runtime reads connection settings from the environment, and no developer's .env.
        env = {"TELESCORE_ENV_FILE": str(self.dir / "no.env")}
        if mongodb is not None:
            env |= {"TELESCORE_MONGODB_URI": mongodb.url, "TELESCORE_MONGODB_DATABASE": DATABASE}
        return replace(self._mlserver(label, home, options, env), logged=mongodb is not None)

    def constant_mlserver(self, label: str) -> Server:
        """Define MLServer serving `benchmarks.constant_runtime`: MLServer's own floor."""
        from telescore.jobs.model_repository import server_settings

        home, options = self._mlserver_home(label)
        repository = home / "repository"
        (repository / MODEL).mkdir(parents=True)
        settings = server_settings(repository.resolve(), options)
        (repository / "settings.json").write_text(json.dumps(settings))
        model = {"name": MODEL, "implementation": "benchmarks.constant_runtime.ConstantRuntime"}
        (repository / MODEL / "model-settings.json").write_text(json.dumps(model))
        return self._mlserver(label, home, options, {})

    def _mlserver_home(self, label: str) -> tuple[Path, Any]:
        from telescore.jobs.model_repository import ServerOptions
        from telescore.services.processes import free_port

        ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
        folder = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")  # labels are prose
        return self.dir / folder, ServerOptions(host=HOST, **ports)

    def _mlserver(self, label: str, home: Path, options: Any, env: dict[str, str]) -> Server:
        from telescore.services.mlserver import mlserver_process

        ports = options.http_port, options.grpc_port, options.metrics_port
        repository, tracking = home / "repository", self.context.tracking_uri
        process = mlserver_process(
            home,
            repository,
            *ports,
            tracking,
            control_token=self.context.serving_control_token,
            env=SERVER_ENV | env,
        )
        metrics = f"http://{HOST}:{options.metrics_port}/metrics"
        url, grpc = f"http://{HOST}:{options.http_port}", f"{HOST}:{options.grpc_port}"
        return Server(label, process, url, grpc, metrics, repository)

    def fastapi(self, label: str, app: str, model_uri: str) -> Server:
        """Define one of the apps in benchmarks/fastapi_peer.py under uvicorn, one worker."""
        from telescore.services.processes import ServiceProcess, console_script, free_port, http_ok

        port = free_port()
        url = f"http://{HOST}:{port}"
        # No access log, as in telescore's MLServer: a log line per request is a cost.
        options = f"--host {HOST} --port {port} --workers 1 --no-access-log --log-level warning"
        process = ServiceProcess(
            name=label,
            command=[console_script("uvicorn"), f"benchmarks.fastapi_peer:{app}", *options.split()],
            health=http_ok(f"{url}/health"),
            log_path=self.dir / "logs" / f"{app}.log",
            env=SERVER_ENV | {"MLFLOW_TRACKING_URI": self.mlflow(), "PEER_MODEL_URI": model_uri},
            cwd=PROJECT_ROOT,
        )
        return Server(label, process, url)


# -- the model and the requests -------------------------------------------------------------------


def load_dataset() -> tuple[Any, Any]:
    """Return all 41,188 rows as model inputs and 0/1 labels."""
    import pandas as pd

    from telescore.core.features import split_features_label

    return split_features_label(pd.read_csv(DATASET, sep=";"))


@dataclass(frozen=True)
class Registered:
    """A fitted pipeline and the registry version it was logged as."""

    version: str
    pipeline: Any

    @property
    def uri(self) -> str:
        return f"models:/{MODEL}/{self.version}"


def register(context: Context, features: Any, labels: Any, **model_params: Any) -> Registered:
    """Fit build_pipeline(ModelParams(**model_params)) and register it as training does."""
    from telescore.core.features import build_pipeline, feature_ranges
    from telescore.core.params import ModelParams

    # MLflow's run links, schema hints and requirement notes would bury the figures.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    pipeline = build_pipeline(ModelParams(**model_params)).fit(features, labels)
    registry = context.registry
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run_id = registry.start_run("benchmark")
        ranges = {"feature_ranges": feature_ranges(features)}
        model_uri = registry.log_model(run_id, pipeline, features.head(1000), ranges)
        version = registry.register(model_uri, run_id, tags={"benchmark": "true"}).version
        registry.end_run(run_id, succeeded=True)
    return Registered(version, pipeline)


def prospect(features: Any, index: int = -1) -> dict[str, Any]:
    """Return one row of the dataset as plain Python values."""
    return dict(features.iloc[[index]].to_dict(orient="records")[0])


def compact(value: Any) -> bytes:
    """JSON without spaces, as a client sends it."""
    return json.dumps(value, separators=(",", ":")).encode()


def v2_body(rows: Any) -> bytes:
    """The V2 REST request for `rows` (a list of dicts or a DataFrame), as compact JSON."""
    from telescore.io.serving_client import inference_request

    return compact(inference_request(rows))


def grpc_request(row: dict[str, Any]) -> Any:
    """The single-row ModelInferRequest, built once as a gRPC client would."""
    from mlserver.grpc import dataplane_pb2 as pb

    from telescore.core.schema import CATEGORICAL_VALUES, FEATURES, INTEGER_FEATURES

    inputs = []
    for name in FEATURES:
        value = row[name]
        if name in CATEGORICAL_VALUES:
            datatype, contents = "BYTES", pb.InferTensorContents(bytes_contents=[value.encode()])
        elif name in INTEGER_FEATURES:
            datatype, contents = "INT64", pb.InferTensorContents(int64_contents=[value])
        else:
            datatype, contents = "FP64", pb.InferTensorContents(fp64_contents=[value])
        tensor = {"name": name, "datatype": datatype, "shape": [1], "contents": contents}
        inputs.append(pb.ModelInferRequest.InferInputTensor(**tensor))
    return pb.ModelInferRequest(model_name=MODEL, inputs=inputs)
