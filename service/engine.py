"""The serving engine of one worker process: every served model, in-process.

The :class:`Engine` holds a :class:`~service.model_versions.ModelVersions` per model (its
versions, labels and routing), each version a :class:`~service.served_model.ServedModel`
(its SavedModel, thread and batch queues). It reads the store and the model config at
start, and again every ``poll_s`` seconds; :attr:`Engine.ready` is true once every model
has a version ``AVAILABLE``.

Typical usage::

    engine = Engine(settings, source=read_store, names=["imdb"])
    engine.start()                                   # on the event loop; loads in the background
    ...
    outputs = await engine.model("imdb").run("serving_default", token_ids)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import typing as t
from pathlib import Path

from service.catalog import Stored
from service.client_text import clip
from service.config import ServingSettings
from service.errors import InvalidInput, ModelNotFound
from service.metrics import CONFIG_ERRORS
from service.model_versions import ModelVersions
from service.served_model import ServedModel, State
from service.runtime_files import read_private, write_private
from service.versions import ConfigError, ServingConfig, load_model_config, parse_config

logger = logging.getLogger("bentoml.keras_serving.engine")


class Engine:
    """Every model served by this worker, each with its versions (:mod:`service.model_versions`).

    Args:
        settings: the worker's settings (``poll_s``, ``model_config``, ...).
        source: what the store holds now (``{name: {version: StoredVersion}}``); called off
            the event loop at start and every ``poll_s`` seconds.
        names: the models to serve (fixed for the worker's life).
        config: the model config to start with (policy and labels).
    """

    def __init__(
        self,
        settings: ServingSettings,
        source: t.Callable[[], Stored],
        names: t.Iterable[str],
        config: ServingConfig | None = None,
        shared_config: Path | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.config = config or ServingConfig()
        self.models = {
            name: ModelVersions(
                name,
                lambda stored: ServedModel(stored.info, stored.path, settings),
                settings.max_versions,
            )
            for name in names
        }
        # A config applied by HandleReloadConfigRequest reaches one worker; it leaves it in
        # this file, which every worker of the server (and a replacement) applies too.
        self.shared_config = shared_config
        self._stamps: dict[str, int | None] = {}
        self._started_settled = False  # every version wanted at start loaded or failed
        self._watcher: asyncio.Task[None] | None = None
        # One adoption at a time: a poll that read the store before a reload applied must not
        # re-apply, after it, the config the reload replaced.
        self._adopting = asyncio.Lock()

    def start(self) -> None:
        """Reads the store and starts loading what the config wants, in the background.
        Call it on the event loop (the service's ``__init__`` runs there).

        Raises:
            InvalidInput: the config names a model or version that does not exist.
            ConfigError: the config file cannot be read.
        """
        stored = self.source()
        if self.settings.model_config and not os.path.isfile(self.settings.model_config):
            raise ConfigError(f"SERVICE_MODEL_CONFIG={self.settings.model_config}: no such file")
        config = self._changed(self.settings.model_config, load_model_config) or self.config
        config = self._changed(self.shared_config, _read_shared) or config
        self._check(config, stored)
        self._apply(config, stored)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def _check(self, config: ServingConfig, stored: Stored, count: bool = True) -> None:
        """Raises InvalidInput for a config naming what is not served or stored, or (with
        ``count``: a new config) loading more than ``SERVICE_MAX_VERSIONS`` of a model."""
        for name in config.models:
            if name not in self.models:
                raise InvalidInput(
                    f"models.{name}: not a served model (served: {', '.join(sorted(self.models))})"
                )
        for name, versions in self.models.items():
            versions.check(config.for_model(name), stored.get(name, {}), count)

    def _apply(self, config: ServingConfig, stored: Stored) -> None:
        self.config = config
        for name, versions in self.models.items():
            versions.update(stored.get(name, {}), config.for_model(name))

    def _changed(
        self, path: str | Path | None, read: t.Callable[[str | Path], ServingConfig]
    ) -> ServingConfig | None:
        """The config at ``path`` if the file changed since the last look (else None)."""
        if not path:
            return None
        try:
            stamp: int | None = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamps.get(str(path)):
            return None
        self._stamps[str(path)] = stamp
        return None if stamp is None else read(path)

    async def _watch(self) -> None:
        """Every second: a config shared by another worker; every ``poll_s``: the store and
        the config file."""
        tick = min(self.settings.poll_s, 1.0) if self.settings.poll_s > 0 else 1.0
        last_poll = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                shared = self._changed(self.shared_config, _read_shared)
                if shared is not None:
                    await self._adopt(shared)
                if (
                    self.settings.poll_s > 0
                    and time.monotonic() - last_poll >= self.settings.poll_s
                ):
                    last_poll = time.monotonic()
                    await self.poll()
            except asyncio.CancelledError:
                raise
            except (ConfigError, InvalidInput, OSError) as exc:
                CONFIG_ERRORS.inc()
                logger.error("model config not applied, keeping the current one: %s", exc)
            except Exception:
                logger.exception("looking at the model store failed; trying again later")

    async def poll(self) -> None:
        """One look at the store and the config file; applies what changed."""
        changed = await asyncio.to_thread(
            self._changed, self.settings.model_config, load_model_config
        )
        # The config in force stays in force when the store grows: the cap trims it instead.
        await self._adopt(changed, count=changed is not None)

    async def _adopt(self, config: ServingConfig | None, count: bool = True) -> None:
        """Checks ``config`` (None: the one in force when its turn comes) against what the
        store holds now, then applies both."""
        async with self._adopting:
            stored = await asyncio.to_thread(self.source)
            config = self.config if config is None else config
            self._check(config, stored, count)
            self._apply(config, stored)

    async def reload(self, config: ServingConfig, timeout_s: float = 300.0) -> None:
        """Applies ``config`` now (TF Serving's ``HandleReloadConfigRequest``), shares it with
        the other workers, and returns once every version it wants here has loaded or failed.

        Raises:
            InvalidInput: a model or version the config names does not exist.
            TimeoutError: loading took longer than ``timeout_s``.
        """
        await self._adopt(config)
        if self.shared_config is not None:
            _write_shared(self.shared_config, config)
            self._stamps[str(self.shared_config)] = os.stat(self.shared_config).st_mtime_ns
        deadline = time.monotonic() + timeout_s
        while not self.settled():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the new config's versions did not load in {timeout_s:.0f}s")
            await asyncio.sleep(0.1)

    def settled(self) -> bool:
        """No version the config wants is still loading."""
        return all(
            versions.versions[v].state not in (State.START, State.LOADING)
            for versions in self.models.values()
            for v in versions.desired()
            if v in versions.versions
        )

    @property
    def ready(self) -> bool:
        """Every model answers requests that name no version and, the first time, every
        version the config wants at start has loaded or failed (so that /readyz never turns
        true while a version a client may ask for is still loading; later loads, e.g. a
        rollout, happen while ready)."""
        if not self.models or not all(model.ready for model in self.models.values()):
            return False
        if not self._started_settled:
            self._started_settled = self.settled()
        return self._started_settled

    def model(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> ServedModel:
        """The version of ``name`` that answers (``version``, ``label`` or the default).

        Raises:
            ModelNotFound: not served, or no such version or label.
            NotReady: that version is loading, failed or unloading.
            InvalidInput: both a version and a label.
        """
        model = self.models.get(name)
        if model is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"model '{clip(name)}' is not served (served: {served})")
        return model.get(version, label)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self.shared_config is not None:
            self.shared_config.unlink(missing_ok=True)
        for model in self.models.values():
            await model.close()


def _read_shared(path: str | Path) -> ServingConfig:
    try:
        raw = json.loads(read_private(Path(path)))
    except ValueError as exc:
        raise ConfigError(f"{path}: not a config this server wrote ({exc})") from None
    return parse_config(raw, source="HandleReloadConfigRequest")


def _write_shared(path: Path, config: ServingConfig) -> None:
    # Atomic (other workers read all of it or the previous one), in the private directory.
    write_private(path, json.dumps(config.to_raw()))
