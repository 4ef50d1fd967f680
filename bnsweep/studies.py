"""The studies shipped with bnsweep: the search-space files of the repository's
search_spaces/ folder, installed as the package data `bnsweep.search_spaces`
(pyproject.toml maps the folder there), so that `bnsweep run lr` works from a
wheel as `bnsweep run search_spaces/lr.py` does in a checkout.
"""

from __future__ import annotations

import json
import os
from importlib import metadata, resources
from pathlib import Path
from urllib.parse import unquote, urlparse

from bnsweep.errors import UsageError

PACKAGE = "bnsweep.search_spaces"


def _editable_source() -> Path | None:
    """The source folder of an editable install (`pip install -e .`), from the record pip
    keeps of where it came from (PEP 610 direct_url.json); None for any other install.

    Needed because setuptools' editable finder maps a package folder without an
    __init__.py (search_spaces/ has none: nothing imports the studies) but does not
    import it under a parent package, so `bnsweep.search_spaces` is missing there."""
    # Every bnsweep distribution on the path: in a checkout, its bnsweep.egg-info comes first
    # and has no such record; the installed one has.
    for dist in metadata.distributions(name="bnsweep"):
        try:
            url = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        if url.get("dir_info", {}).get("editable") and url.get("url", "").startswith("file://"):
            return Path(unquote(urlparse(url["url"]).path))
    return None


def shipped_studies() -> dict[str, Path]:
    """Name (file stem) -> path of each shipped search-space file; empty where there are none
    (an install that predates them: reinstall bnsweep)."""
    try:
        entries = list(resources.files(PACKAGE).iterdir())
    except ModuleNotFoundError:
        source = _editable_source()
        folder = source / "search_spaces" if source is not None else None
        entries = list(folder.iterdir()) if folder is not None and folder.is_dir() else []
    # Installed by pip, the package is a folder on disk, each file a Path read where it is
    # (a namespace package's files() is a MultiplexedPath, whose entries are Paths too).
    return {Path(e).stem: Path(e) for e in sorted(entries, key=lambda e: e.name)
            if isinstance(e, os.PathLike) and e.name.endswith(".py") and not e.name.startswith("_")}


def resolve_study_file(arg: str) -> str:
    """The search-space file `bnsweep run ARG` / `bnsweep plan ARG` means: ARG itself when it
    is an existing path or looks like one (has a "/" or ends in ".py": load_study then says
    what is wrong with it), else the shipped study of that name.

    Raises UsageError, in one line listing the shipped names, for a name that is neither."""
    if os.path.exists(arg) or "/" in arg or os.sep in arg or arg.endswith(".py"):
        return arg
    studies = shipped_studies()
    if arg in studies:
        return str(studies[arg])
    listed = ", ".join(sorted(studies)) or "none (this install lacks bnsweep.search_spaces; reinstall bnsweep)"
    raise UsageError(f"{arg!r} is neither a search-space file nor a shipped study; shipped studies: {listed}")
