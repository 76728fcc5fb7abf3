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
from typing import Any

import gevent
from locust import FastHttpUser, TaskSet, between, events, tag, task
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


# ------------------------------------------------------------------------------ HTTP


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


@tag("imdb", "http")
class ImdbHttp(ModelTasks):
    model = "imdb"

    @task
    def sentiment(self) -> None:
        post_and_check(self)
        self.done()


@tag("reuters", "http")
class ReutersHttp(ModelTasks):
    model = "reuters"

    @task
    def classify(self) -> None:
        post_and_check(self)
        self.done()


@tag("cifar", "http")
class CifarHttp(ModelTasks):
    model = "cifar"

    @task
    def classify(self) -> None:
        post_and_check(self)
        self.done()


@tag("mnist", "http")
class MnistHttp(ModelTasks):
    model = "mnist"

    @task
    def classify(self) -> None:
        post_and_check(self)
        self.done()


@tag("cosine", "http")
class CosineHttp(ModelTasks):
    model = "cosine"

    @task
    def forecast(self) -> None:
        post_and_check(self)
        self.done()


@tag("translator", "http")
class TranslatorHttp(ModelTasks):
    model = "translator"

    @task
    def translate(self) -> None:
        post_and_check(self)
        self.done()


class HttpModelUser(FastHttpUser):
    """Every model through the friendly JSON endpoints."""

    wait_time = between(0.05, 0.3)
    tasks = {  # noqa: RUF012 (Locust's API: task set -> weight)
        ImdbHttp: WEIGHTS["imdb"],
        ReutersHttp: WEIGHTS["reuters"],
        CifarHttp: WEIGHTS["cifar"],
        MnistHttp: WEIGHTS["mnist"],
        CosineHttp: WEIGHTS["cosine"],
        TranslatorHttp: WEIGHTS["translator"],
    }
    network_timeout = connection_timeout = 30.0


# ------------------------------------------------------------------------------ gRPC


@tag("imdb", "grpc")
class ImdbGrpc(ModelTasks):
    @task
    def sentiment(self) -> None:
        texts = payloads.reviews(random.choice(ITEMS))
        self.user.predict(
            "imdb", "Predict imdb/predict_text", self.user.client.sentiment, texts, len(texts)
        )
        self.done()


@tag("reuters", "grpc")
class ReutersGrpc(ModelTasks):
    @task
    def classify(self) -> None:
        client, texts = self.user.client, payloads.newswires(random.choice(ITEMS))
        method = lambda batch: client.classify_topic(batch, top_k=payloads.TOP_K["reuters"])
        self.user.predict("reuters", "Predict reuters/predict_text", method, texts, len(texts))
        self.done()


@tag("cifar", "grpc")
class CifarGrpc(ModelTasks):
    @task
    def classify(self) -> None:
        client, images = self.user.client, payloads.cifar_images(random.choice(ITEMS))
        method = lambda batch: client.classify_image(batch, "cifar", top_k=payloads.TOP_K["cifar"])
        self.user.predict("cifar", "Predict cifar/predict_images", method, images, len(images))
        self.done()


@tag("mnist", "grpc")
class MnistGrpc(ModelTasks):
    @task
    def classify(self) -> None:
        client, images = self.user.client, payloads.mnist_images(random.choice(ITEMS))
        method = lambda batch: client.classify_image(batch, "mnist", top_k=payloads.TOP_K["mnist"])
        self.user.predict("mnist", "Predict mnist/predict_images", method, images, len(images))
        self.done()


@tag("cosine", "grpc")
class CosineGrpc(ModelTasks):
    @task
    def forecast(self) -> None:
        client = self.user.client
        method = lambda window: client.forecast(window, horizon=payloads.HORIZON)
        name = f"Predict cosine/forecast x{payloads.HORIZON}"
        self.user.predict("cosine", name, method, payloads.window(), 1)
        self.done()


@tag("translator", "grpc")
class TranslatorGrpc(ModelTasks):
    @task
    def translate(self) -> None:
        sentences = payloads.sentences(random.choice(ITEMS))
        method = self.user.client.translate
        self.user.predict(
            "translator", "Predict translator/translate", method, sentences, len(sentences)
        )
        self.done()


class GrpcModelUser(GrpcUser):
    """Every model through TF Serving's ``PredictionService/Predict``."""

    wait_time = between(0.05, 0.3)
    tasks = {  # noqa: RUF012 (Locust's API: task set -> weight)
        ImdbGrpc: WEIGHTS["imdb"],
        ReutersGrpc: WEIGHTS["reuters"],
        CifarGrpc: WEIGHTS["cifar"],
        MnistGrpc: WEIGHTS["mnist"],
        CosineGrpc: WEIGHTS["cosine"],
        TranslatorGrpc: WEIGHTS["translator"],
    }

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
