"""The Myna library app as a Hugging Face Space: the page of `myna app`, from a model id and a store path.

A Space runs this file (`app_file` in README.md's front matter). Its settings are the Space's variables, or the
defaults below, relative to this folder:

    MYNA_MODEL     the model (Hub id or folder) the store was embedded with, e.g. "you/myna-base"
                   (default: the one the store names; a store embedded from a local folder needs this)
    MYNA_STORE     the store folder (default "store"), as `myna embed ... --output store/` wrote it; its prepared
                   index and caches (`myna app --store store/ --prepare`) in store/.myna/ come along
    MYNA_AUDIO     the folder holding the store's audio, if uploaded (default "music"): the tracks' common folder
                   becomes this one. Without it the page searches and maps, but has no players
    MYNA_METADATA  CSV files of tags to colour the map by, separated by commas (metadata.csv beside the tracks is
                   read anyway)

Locally, the same page: `python space/app.py` (from any folder; GRADIO_SERVER_PORT picks the port).
"""

import os

from myna_pipelines.app import launch
from myna_pipelines.explore import LibraryExplorer


HERE = os.path.dirname(os.path.abspath(__file__))


def setting(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def in_space(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(HERE, path)


def open_library() -> LibraryExplorer:
    store = in_space(setting("MYNA_STORE", "store"))
    audio = in_space(setting("MYNA_AUDIO", "music"))
    metadata = [in_space(p.strip()) for p in (setting("MYNA_METADATA") or "").split(",") if p.strip()]
    if not os.path.isdir(store):  # a Space without its store yet: the page says what to add
        message = (
            f"No store at `{store}`. Add one to this Space: `myna embed MUSIC/ --model MODEL --output store/ "
            "--timeline`, then `myna app --store store/ --prepare`, and upload `store/` (and `music/`)."
        )
        return LibraryExplorer.empty(store, [message])
    return LibraryExplorer.open(
        store=store, model=setting("MYNA_MODEL"), audio_root=audio if os.path.isdir(audio) else None,
        metadata=metadata,
    )  # fmt: skip


if __name__ == "__main__":
    launch(open_library(), host=None, port=None)
