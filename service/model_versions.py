"""Every served version of one model, its labels, and which version answers a request.

A :class:`ModelVersions` is told what the store holds and what the config wants
(:meth:`ModelVersions.update`); it starts loading the versions it lacks, and once a new
version is ``AVAILABLE`` it switches the routing to it in one assignment on the event loop
(:meth:`ModelVersions.refresh`). A version that leaves the policy keeps serving until the
versions that replace it are settled, then finishes what is queued for it, unloads and
frees its memory. A version that fails to load stays ``END`` with its error and never
replaces a working one.

Typical usage::

    imdb = ModelVersions("imdb", lambda stored: ServedModel(stored.info, stored.path, settings))
    imdb.update(stored_versions, config.for_model("imdb"))    # on the event loop
    imdb.get(label="stable").run("serving_default", batch)
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import typing as t
from dataclasses import dataclass, field

from service.catalog import StoredVersion
from service.client_text import clip, parse_version
from service.errors import InvalidInput, ModelNotFound, NotReady
from service.served_model import ServedModel, State
from service.versions import ModelConfig

logger = logging.getLogger("bentoml.keras_serving.versions")

# After the routing moves away from a version, requests that resolved it just before (and
# are between resolving and queueing, e.g. reading their body) get this long to reach its
# queue before it drains and unloads.
RETIRE_GRACE_S = 1.0
# Versions of one model loaded at once, whatever a config asks (SERVICE_MAX_VERSIONS).
DEFAULT_MAX_VERSIONS = 4


@dataclass(frozen=True)
class Routing:
    """Who answers: the default version and each label's version (None: none available)."""

    default: int | None = None
    labels: dict[str, int] = field(default_factory=dict)


def release_memory() -> None:
    """Frees what an unloaded model leaves behind: its reference cycles (collected even
    when ``gc.freeze()`` parked them) and glibc's free pages."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class ModelVersions:
    """The versions of one model that this worker serves."""

    def __init__(
        self,
        name: str,
        make: t.Callable[[StoredVersion], ServedModel],
        max_versions: int = DEFAULT_MAX_VERSIONS,
    ) -> None:
        self.name = name
        self.max_versions = max_versions
        self.versions: dict[int, ServedModel] = {}
        self.config = ModelConfig()
        self.routing = Routing()
        self._make = make
        self._stored: dict[int, StoredVersion] = {}
        self._retiring: dict[int, asyncio.Task[None]] = {}
        # Version -> the store path it failed to load from (a re-registered one is retried).
        self._failed: dict[int, str] = {}

    # ------------------------------------------------------------ what to serve

    def desired(self, stored: t.Iterable[int] | None = None) -> list[int]:
        """The policy's versions among ``stored``, plus any version a label names; at most
        ``max_versions`` (the labelled ones first, then the newest), so that a store that
        grows under ``versions: all`` never loads more than the cap."""
        return self._wanted(self.config, set(self._stored if stored is None else stored), True)

    def _wanted(self, config: ModelConfig, stored: set[int], capped: bool) -> list[int]:
        labelled = {v for v in config.labels.values() if v in stored}
        candidates = stored
        if config.policy.kind == "latest":
            # A latest version that failed to load gives way to the newest one that loads
            # (at start and in a replacement worker too; TF Serving would serve nothing).
            candidates = stored - self._failed_here()
        wanted = set(config.policy.select(candidates)) | labelled
        if capped and len(wanted) > self.max_versions:
            rest = sorted(wanted - labelled, reverse=True)
            wanted = labelled | set(rest[: max(0, self.max_versions - len(labelled))])
        return sorted(wanted)

    def check(self, config: ModelConfig, stored: t.Iterable[int], count: bool = True) -> None:
        """Raises InvalidInput when ``config`` labels a version the store lacks or, with
        ``count``, would load more than ``max_versions`` versions (``SERVICE_MAX_VERSIONS``)."""
        stored = set(stored)
        if count:
            wanted = self._wanted(config, stored, capped=False)
            if len(wanted) > self.max_versions:
                shown = ", ".join(map(str, wanted[:8])) + (", ..." if len(wanted) > 8 else "")
                raise InvalidInput(
                    f"models.{self.name}.versions: would load {len(wanted)} versions of model "
                    f"'{self.name}' ({shown}), more than SERVICE_MAX_VERSIONS="
                    f"{self.max_versions}"
                )
        for label, version in config.labels.items():
            if version not in stored:
                raise InvalidInput(
                    f"labels.{clip(label)}: model '{self.name}' has no version {version} "
                    f"(stored: {sorted(stored) or 'none'})"
                )

    def _failed_here(self) -> set[int]:
        """Versions that failed to load from the path the store still has for them."""
        return {
            v
            for v, path in self._failed.items()
            if v in self._stored and self._stored[v].path == path
        }

    def update(self, stored: t.Mapping[int, StoredVersion], config: ModelConfig) -> None:
        """Applies what the store holds and what the config wants: starts loading new
        versions, then :meth:`refresh`. Must run on the event loop."""
        self._stored = dict(stored)
        self.config = config
        loop = asyncio.get_running_loop()
        for version in self.desired():
            current = self.versions.get(version)
            if (
                current is not None
                and current.path == self._stored[version].path
                and version not in self._retiring
            ):
                continue
            if current is not None and version not in self._retiring:
                self._retire(version)  # re-registered under the same number: load anew
            model = self._make(self._stored[version])
            self.versions[version] = model
            model.start().add_done_callback(
                lambda _f, m=model: loop.call_soon_threadsafe(self._loaded, m)
            )
        self.refresh()

    def _loaded(self, model: ServedModel) -> None:
        if model.ready and gc.isenabled() and gc.get_freeze_count():
            # The server froze what it loaded at start (service.ready); the new version's
            # objects join them, or every full collection would walk them again.
            gc.freeze()
        if model.error:
            version = model.info.version
            self._failed[version] = model.path
            fallback = [v for v in self.desired() if v not in self.versions]
            if self.config.policy.kind == "latest" and fallback and not self.routing.default:
                logger.warning(
                    "%s v%d failed to load (%s); loading v%s instead, the newest stored "
                    "version below it",
                    self.name,
                    version,
                    model.error,
                    ", v".join(map(str, fallback)),
                )
            else:
                logger.warning(
                    "%s v%d failed to load; %s keeps serving (%s)",
                    self.name,
                    version,
                    f"v{self.routing.default}" if self.routing.default else "nothing",
                    model.error,
                )
            if fallback:
                self.update(self._stored, self.config)  # starts loading the fallback
                return
        self.refresh()

    def refresh(self) -> None:
        """Routes to what is available, and retires what is no longer needed."""
        desired = [v for v in self.desired() if v in self.versions]
        available = {v for v, m in self.versions.items() if m.ready and v not in self._retiring}
        settled = all(self.versions[v].state in (State.AVAILABLE, State.END) for v in desired)
        keep = set(desired)
        if not settled or not available & keep:
            # The replacements are still loading, or all failed: the old ones keep serving.
            keep |= available & set(self._stored)
        serving = available & keep
        preferred = serving & set(desired) or serving
        labels = {}
        for label, version in self.config.labels.items():
            if version in serving:
                labels[label] = version
            elif self.routing.labels.get(label) in serving:  # the new one is not ready yet
                labels[label] = self.routing.labels[label]
        routing = Routing(default=max(preferred) if preferred else None, labels=labels)
        if routing != self.routing:
            if routing.default != self.routing.default:
                logger.info(
                    "%s: now answering with v%s (was v%s)",
                    self.name,
                    routing.default,
                    self.routing.default,
                )
            self.routing = routing  # one assignment: every later request sees the new routes
        for version, model in list(self.versions.items()):
            if version in keep or version in self._retiring:
                continue
            if model.ready:
                self._retire(version)
            elif model.state is State.END and version not in self._failed_here():
                # A failed load the config no longer wants (one still stored stays in the
                # status with its error: it says why an older version answers).
                del self.versions[version]

    def _retire(self, version: int) -> None:
        model = self.versions[version]

        async def retire() -> None:
            await asyncio.sleep(RETIRE_GRACE_S)
            await model.close()  # finishes what is queued for it
            if self.versions.get(version) is model:
                del self.versions[version]
            self._retiring.pop(version, None)
            await asyncio.to_thread(release_memory)
            logger.info("%s v%d unloaded", self.name, version)
            self.refresh()  # a version loaded again while this one retired may serve now

        self._retiring[version] = asyncio.get_running_loop().create_task(retire())

    async def close(self) -> None:
        for task in list(self._retiring.values()):
            await task
        for model in list(self.versions.values()):
            await model.close()

    # ------------------------------------------------------------ who answers

    @property
    def ready(self) -> bool:
        """A version answers requests that name none."""
        return self.routing.default is not None

    @property
    def default(self) -> ServedModel | None:
        version = self.routing.default
        return None if version is None else self.versions.get(version)

    def get(self, version: int | str | None = None, label: str | None = None) -> ServedModel:
        """The version that answers a request naming ``version``, ``label`` or neither.

        Raises:
            InvalidInput: both given, or a version that is not an integer.
            ModelNotFound: no such version or label.
            NotReady: it exists but is loading, failed or unloading.
        """
        if version is not None and label:
            raise InvalidInput("version, label: give one or the other, not both")
        if version is not None:
            if isinstance(version, int) and not isinstance(version, bool):
                number = version
            else:  # text from a client: ASCII digits only ("١" is 1 to int())
                number = parse_version(version if isinstance(version, str) else repr(version))
            model = self.versions.get(number)
            if model is None:
                served = ", ".join(str(v) for v in sorted(self.versions)) or "none"
                raise ModelNotFound(
                    f"version: model '{self.name}' has no version {number} (versions: {served})"
                )
            if not model.ready:
                raise NotReady(
                    f"version: version {number} of model '{self.name}' is "
                    f"{model.state.value}{f' ({model.error})' if model.error else ''}, "
                    "retry later or use another version"
                )
            return model
        if label:
            if label not in self.config.labels:
                known = ", ".join(sorted(self.config.labels)) or "none"
                raise ModelNotFound(
                    f"label: model '{self.name}' has no version label '{clip(label)}' "
                    f"(labels: {known})"
                )
            target = self.routing.labels.get(label)
            if target is None:
                wanted = self.config.labels[label]
                model = self.versions.get(wanted)
                state = f"{model.state.value}" if model else "not stored"
                raise NotReady(
                    f"label: '{clip(label)}' names version {wanted} of model '{self.name}', "
                    f"which is {state}; retry later"
                )
            return self.versions[target]
        model = self.default
        if model is None:
            errors = [m.error for m in self.versions.values() if m.error]
            reason = errors[-1] if errors else "loading"
            raise NotReady(f"model '{self.name}' is not available ({reason}), retry later")
        return model

    def status(self) -> list[tuple[int, str, str | None]]:
        """``(version, state, error)`` of every version known, ascending."""
        return [(v, m.state.value, m.error) for v, m in sorted(self.versions.items())]
