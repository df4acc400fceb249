"""Where the score pipeline's model comes from: a registry URI, an archive or a folder.

``score.model`` is one of:

- ``models:/<name>@<alias>`` or ``models:/<name>/<version>``: a version in the MLflow
  Model Registry at the tracking URI (its ``model_package/model.tar.gz``);
- the path or URI (local or ``s3://``) of a ``model.tar.gz``;
- the path or URI of an unpacked bundle folder (the folder holding
  ``manifest.json``), or of a folder holding one ``model.tar.gz``.

Every source ends up as a local, unpacked, manifest-verified folder that
``TSAPredictor.from_model_dir`` loads. The model's name and version: the registry's
for a registry URI; otherwise ``model_name`` and ``model_version`` of the bundle's
manifest when it records them, else the archive's (or folder's) name and
``sha256:`` plus the first 12 hex digits of the archive's (or manifest's) SHA-256.
"""

from __future__ import annotations

import json
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import fsspec
import mlflow
from fsspec.implementations.local import LocalFileSystem
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tsa_kedro.registry.mlflow_registry import resolve_store_uri
from tsa_kedro.serving import layout
from tsa_kedro.serving.archive import (
    MANIFEST_NAME,
    ManifestError,
    UnsafeArchiveError,
    safe_extract,
    sha256_file,
)
from tsa_kedro.serving.handler import TSAPredictor

PARAMETER = "score.model"
ARCHIVE_NAME = "model.tar.gz"
_REGISTRY_URI = re.compile(
    r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$"
)
_SHA_PREFIX = 12


class ModelSourceError(ValueError):
    """``score.model`` names no loadable, intact model bundle; the message says which
    source and why."""


@dataclass(frozen=True)
class ScoringModel:
    """A loaded bundle and what the scores record about it."""

    predictor: TSAPredictor
    name: str
    version: str
    source: str  # score.model as given
    location: str  # the archive or folder read
    tracking_uri: str | None = None  # the registry read (registry sources)
    # the bundle's reference_profile.json (drift monitoring); None in bundles
    # packaged before it was added
    reference_profile: dict | None = None

    def __reduce__(self) -> tuple:
        """Pickled as where the model came from, never as weights or runtime
        sessions (an ONNX Runtime session cannot be pickled): a step on another
        host (``ExecutionPickleDataset``) loads the same bundle again; a registry
        source by its version, so a moved alias cannot swap the model."""
        return (
            _reload,
            (
                self.source,
                self.name,
                self.version,
                self.tracking_uri,
                self.predictor.device.type,
            ),
        )


def _reload(
    source: str, name: str, version: str, tracking_uri: str | None, device: str
) -> ScoringModel:
    """``ScoringModel.__reduce__``'s loader: the same source, checked to be the same
    name and version."""
    if source.startswith("models:/"):
        source = f"models:/{name}/{version}"
    model = load_scoring_model(source, tracking_uri or "", device)
    if (model.name, model.version) != (name, version):
        raise _fail(
            source,
            f"now holds {model.name} version {model.version}, not {name} version "
            f"{version} as when it was first loaded",
        )
    return model


def _fail(source: str, problem: str) -> ModelSourceError:
    return ModelSourceError(f"parameter {PARAMETER}: {source!r} {problem}")


def _from_registry(
    source: str, match: re.Match, tracking_uri: str, workdir: Path
) -> tuple[Path, str, str, str]:
    """Download the registered version's archive; ``(archive, name, version,
    location)``."""
    tracking_uri = resolve_store_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = match["name"]
    try:
        if match["alias"]:
            found = client.get_model_version_by_alias(name, match["alias"])
        else:
            found = client.get_model_version(name, match["version"])
    except MlflowException as error:
        raise _fail(
            source, f"is not a model version in the registry {tracking_uri}: {error}"
        ) from None
    try:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=found.source,
            dst_path=str(workdir / "download"),
            tracking_uri=tracking_uri,
        )
    except (MlflowException, OSError) as error:
        raise _fail(
            source,
            f"(version {found.version}) has no readable package at {found.source}: "
            f"{error}",
        ) from None
    archives = sorted(Path(folder).rglob(ARCHIVE_NAME))
    if not archives:
        raise _fail(
            source,
            f"(version {found.version}) holds no {ARCHIVE_NAME} at {found.source}",
        )
    return archives[0], found.name, str(found.version), found.source


def _fetch(source: str, workdir: Path) -> tuple[Path, bool]:
    """A local copy of a path or URI; ``(local path, is a folder)``."""
    try:
        fs, path = fsspec.core.url_to_fs(source)
    except (ValueError, ImportError) as error:
        raise _fail(source, f"is not a readable path or URI: {error}") from None
    try:
        if not fs.exists(path):
            raise _fail(source, "does not exist")
        is_folder = fs.isdir(path)
        if isinstance(fs, LocalFileSystem):
            return Path(path), is_folder
        local = workdir / "download" / PurePosixPath(path.rstrip("/")).name
        local.parent.mkdir(parents=True, exist_ok=True)
        if is_folder:  # the folder's contents into local/
            fs.get(path.rstrip("/") + "/", str(local) + "/", recursive=True)
        else:
            fs.get(path, str(local))
        return local, is_folder
    except OSError as error:
        raise _fail(source, f"cannot be read: {error}") from None


def _manifest_identity(model_dir: Path) -> tuple[str | None, str | None]:
    try:
        manifest = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None  # verify_manifest reports it
    name, version = manifest.get("model_name"), manifest.get("model_version")
    return (str(name) if name else None), (str(version) if version else None)


def _extract(source: str, archive: Path, workdir: Path) -> Path:
    target = workdir / "model"
    try:
        safe_extract(archive, target)
    except (
        tarfile.TarError,
        zlib.error,
        EOFError,
        UnsafeArchiveError,
        OSError,
    ) as error:
        raise _fail(
            source, f"is not a readable model archive ({archive.name}): {error}"
        ) from None
    return target


def load_scoring_model(
    source: str, tracking_uri: str, device: str | None = None
) -> ScoringModel:
    """Resolve ``score.model`` to a verified bundle and load it.

    Args:
        source: A registry URI, an archive or a bundle folder (module doc).
        tracking_uri: The MLflow tracking and registry URI (registry sources).
        device: ``TSAPredictor`` device (None: the bundle's setting).

    Returns:
        The predictor with the model's name and version.

    Raises:
        ModelSourceError: The source is missing or unreadable, not in the registry,
            not a bundle, or its files disagree with the manifest (the message names
            ``score.model`` and the source).
    """
    with tempfile.TemporaryDirectory(prefix="tsa-score-model-") as tmp:
        workdir = Path(tmp)
        name = version = None
        match = _REGISTRY_URI.match(source)
        if source.startswith("models:/") and match is None:
            raise _fail(
                source, "is not models:/<name>@<alias> or models:/<name>/<version>"
            )
        if match is not None:
            tracking_uri = resolve_store_uri(tracking_uri)
            archive, name, version, location = _from_registry(
                source, match, tracking_uri, workdir
            )
            model_dir = _extract(source, archive, workdir)
        else:
            local, is_folder = _fetch(source, workdir)
            location = source
            if is_folder and not (local / MANIFEST_NAME).exists():
                archives = sorted(local.glob(ARCHIVE_NAME))
                if not archives:
                    raise _fail(
                        source,
                        f"is a folder without {MANIFEST_NAME} or {ARCHIVE_NAME}",
                    )
                local, is_folder = archives[0], False
                location = f"{source.rstrip('/')}/{ARCHIVE_NAME}"
            if is_folder:
                model_dir = local
                fallback = (
                    PurePosixPath(source.rstrip("/")).name,
                    sha256_file(local / MANIFEST_NAME),
                )
            else:
                model_dir = _extract(source, local, workdir)
                fallback = (local.name, sha256_file(local))
            recorded_name, recorded_version = _manifest_identity(model_dir)
            name = recorded_name or fallback[0]
            version = recorded_version or f"sha256:{fallback[1][:_SHA_PREFIX]}"
        try:
            predictor = TSAPredictor.from_model_dir(model_dir, device=device)
        except (ManifestError, FileNotFoundError, ValueError, KeyError) as error:
            raise _fail(source, f"is not an intact model bundle: {error}") from None
        profile_path = model_dir / layout.REFERENCE_PROFILE
        try:
            reference_profile = (
                json.loads(profile_path.read_text(encoding="utf-8"))
                if profile_path.exists()
                else None
            )
        except ValueError as error:
            raise _fail(
                source, f"holds an unreadable {layout.REFERENCE_PROFILE}: {error}"
            ) from None
    return ScoringModel(
        predictor=predictor,
        name=name,
        version=version,
        source=source,
        location=location,
        tracking_uri=tracking_uri if match is not None else None,
        reference_profile=reference_profile,
    )
