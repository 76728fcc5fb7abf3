"""Locust scenarios: every model over HTTP (FastHttpUser) and gRPC (``clients.grpc``).

One task set per model and protocol, with realistic payloads (``loadtest.payloads``) and a
check of every response body (``loadtest.checks``): a 200 with a wrong body is a failure.
Each task set sends one request and hands control back to its user, which picks the next
model by weight, so a few users already exercise every model.

Tags: the model name (``imdb``, ``reuters``, ``cifar``, ``mnist``, ``cosine``,
``translator``) and the protocol (``http``, ``grpc``). Locust's ``--tags`` keeps tasks having
*any* of the given tags and ``--exclude-tags`` drops them, so::

    --tags imdb                            imdb over both protocols
    --tags http                            every model over HTTP
    --tags imdb --exclude-tags grpc        imdb over HTTP only
    HttpModelUser / GrpcModelUser          (user class names) one protocol, all models

Typical usage::

    locust -f loadtest/locustfile.py --host http://127.0.0.1:3000 --grpc-host 127.0.0.1:8500
    locust -f loadtest/locustfile.py --headless -u 64 -r 16 -t 60s --host http://127.0.0.1:3000 \\
        --grpc-host 127.0.0.1:8500 --csv reports/locust --html reports/locust.html
    make loadtest USERS=8 DURATION=20s
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import gevent
from locust import FastHttpUser, TaskSet, between, events, tag
from locust.env import Environment

from loadtest import checks, payloads
from loadtest.grpc_user import GrpcUser

# Items per request: mostly one, as interactive clients send, sometimes a small batch.
ITEMS = (1, 1, 1, 2, 4)
# Relative traffic per model: sentiment is the popular endpoint, translation the slow one.
WEIGHTS = {"imdb": 4, "reuters": 2, "cifar": 2, "mnist": 1, "cosine": 1, "translator": 1}
JSON = {"Content-Type": "application/json"}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--grpc-host",
        default="",
        help="gRPC target host:port for GrpcModelUser (default: the host of --host, port 8500)",
    )


@events.init.add_listener
def _refresh_the_event_loop_clock(**_kwargs: Any) -> None:
    """gevent's loop caches "now" from when Locust created it, before this file's imports (numpy,
    grpc, the clients) ran: without a refresh, ``--run-time`` timers would fire that many
    seconds early (a 3 s run stopping after 1.5 s on a busy machine)."""
    gevent.get_hub().loop.update_now()


@events.test_start.add_listener
def _drop_users_without_tasks(environment: Environment, **_kwargs: Any) -> None:
    """``--tags http`` leaves GrpcModelUser without tasks: do not spawn users that would fail."""
    kept = [user for user in environment.user_classes if user.tasks]
    if kept and len(kept) < len(environment.user_classes):
        environment.user_classes[:] = kept


class ModelTasks(TaskSet):
    """One request per visit: the user then picks the next model by weight, after waiting."""

    model = ""

    def done(self) -> None:
        self.interrupt(reschedule=False)


def post_and_check(tasks: ModelTasks) -> None:
    """POSTs a pre-encoded realistic body to the model's endpoint and checks the answer."""
    model, items = tasks.model, random.choice(ITEMS)
    path = payloads.PATHS[model]
    body = random.choice(payloads.json_bodies(model, items))
    with tasks.client.post(
        path, data=body, headers=JSON, name=path, catch_response=True
    ) as response:
        if response.status_code != 200:
            response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            return
        try:
            checks.check(model, checks.from_json(model, response.json()), items)
        except (checks.BadResponse, ValueError) as exc:  # ValueError: not JSON
            response.failure(str(exc))


# model -> (request name, the payload of n items, the typed client's call of it)
GRPC_CALLS: dict[str, tuple[str, Callable[[int], Any], Callable[[Any, Any], Any]]] = {
    "imdb": ("Predict imdb/predict_text", payloads.reviews, lambda c, b: c.sentiment(b)),
    "reuters": (
        "Predict reuters/predict_text",
        payloads.newswires,
        lambda c, b: c.classify_topic(b, top_k=payloads.TOP_K["reuters"]),
    ),
    "cifar": (
        "Predict cifar/predict_images",
        payloads.cifar_images,
        lambda c, b: c.classify_image(b, "cifar", top_k=payloads.TOP_K["cifar"]),
    ),
    "mnist": (
        "Predict mnist/predict_images",
        payloads.mnist_images,
        lambda c, b: c.classify_image(b, "mnist", top_k=payloads.TOP_K["mnist"]),
    ),
    "cosine": (  # one window per request, forecast HORIZON steps ahead
        f"Predict cosine/forecast x{payloads.HORIZON}",
        lambda _: payloads.window(),
        lambda c, w: c.forecast(w, horizon=payloads.HORIZON),
    ),
    "translator": ("Predict translator/translate", payloads.sentences, lambda c, b: c.translate(b)),
}


def call_and_check(tasks: ModelTasks) -> None:
    """Sends the model's payload through the typed gRPC client and checks the answer."""
    name, payload, method = GRPC_CALLS[tasks.model]
    items = 1 if tasks.model == "cosine" else random.choice(ITEMS)
    client = tasks.user.client
    tasks.user.predict(
        tasks.model, name, lambda batch: method(client, batch), payload(items), items
    )


def task_set(model: str, protocol: str) -> type[ModelTasks]:
    """The task set of ``model`` over ``protocol`` (``http`` or ``grpc``), tagged with both."""
    send = post_and_check if protocol == "http" else call_and_check

    def visit(tasks: ModelTasks) -> None:
        send(tasks)
        tasks.done()

    class Tasks(ModelTasks):
        tasks = [visit]  # noqa: RUF012 (Locust's API)

    Tasks.model = model
    Tasks.__name__ = Tasks.__qualname__ = f"{model.capitalize()}{protocol.capitalize()}"
    return tag(model, protocol)(Tasks)


class HttpModelUser(FastHttpUser):
    """Every model through the friendly JSON endpoints."""

    wait_time = between(0.05, 0.3)
    tasks = {task_set(model, "http"): weight for model, weight in WEIGHTS.items()}  # noqa: RUF012
    network_timeout = connection_timeout = 30.0


class GrpcModelUser(GrpcUser):
    """Every model through TF Serving's ``PredictionService/Predict``."""

    wait_time = between(0.05, 0.3)
    tasks = {task_set(model, "grpc"): weight for model, weight in WEIGHTS.items()}  # noqa: RUF012

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._labels: dict[str, tuple[str, ...] | None] = {}

    def labels(self, model: str) -> tuple[str, ...] | None:
        """The label names the server reports (asked once; a failure is a failed request)."""
        if model not in self._labels:
            self._labels[model] = None
            with self.request(f"GetModelMetadata {model}") as call:
                self._labels[model] = call(self.client.metadata, model).labels
        return self._labels[model]

    def predict(self, model: str, name: str, method: Any, payload: Any, items: int) -> None:
        """Calls ``method(payload)`` as request ``name`` and checks the answer."""
        labels = self.labels(model) if model in payloads.TOP_K else None
        with self.request(name) as call:
            results = call(method, payload)
            checks.check(model, checks.from_results(model, results), items, labels)
