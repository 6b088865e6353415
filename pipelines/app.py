"""`myna app`: a local web page on a music library (a store and its index), made with Gradio.

    myna app --index index/                     # the index of `myna index`; its store is found from it
    myna app --store store/                     # a store: the index is built (or reused) in store/.myna/index
    myna app --store store/ --prepare           # build the index, the map and the timelines, then exit
    myna app --index index/ --host 0.0.0.0 --port 8080 --auth me:secret   # shared: a login, and a warning printed

Three tabs. **Search**: upload or record a clip, or pick a track of the library; the k nearest tracks each get their
score, a player that starts at the track's best-matching 3 s and a timeline of how similar each of its 3 s chunks is
to the query. **Map**: the tracks in 2-D (UMAP where umap-learn is installed, else PCA; computed once and cached in
the index folder), coloured by a metadata column (the folder, the format, the duration, the columns of
`metadata.csv` files beside the tracks or given with --metadata); hover for the name, click a point to play the track
and search from it. **Track**: a track's self-similarity, its 3 s chunks against each other (repeats and sections).

A mistake (a file that is not audio, a clip shorter than one chunk or longer than ten minutes, a store of another
model, an empty store) is one message on the page; the app keeps serving.

What the page exposes: the audio files of the tracks it has handed to a player (exactly those files, never their
folders), the store's folder, its tracks' paths and their metadata. Served beyond this machine (`--host 0.0.0.0`),
anyone who reaches the port can search and play the library: the command says so, and `--auth user:password` asks
for a login. Uploads stop at `--max_upload_mb`; the players' temporary WAVs and Gradio's copies of what was played
go when the app closes (and Gradio's after an hour anyway).

`space/app.py` runs the same app as a Hugging Face Space. Needs the `app` extra (gradio, plotly, scikit-learn);
`umap-learn` for a UMAP map.

Here: the page (its components and events) and the command. What the page shows comes from `explore.py` (the
library as data) and `app_figures.py` (its figures).
"""

import ipaddress
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from .app_figures import map_figure, self_similarity_figure, timeline_figure


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_MB = 200  # a query is at most 10 minutes (query_rules.MAX_QUERY_SECONDS): 100 MB of 44.1 kHz stereo WAV
# Gradio copies every file a player gets into its cache; copies older than an hour go, swept every 10 minutes (all
# of them when the app closes).
CACHE_SWEEP = (600, 3600)  # (every, older than) seconds: Gradio's `delete_cache`
MAX_RESULTS = 20  # the most result slots a page may have (`--k`: each slot is a few components to build)
CHOICES = 50  # names offered by a track picker at once; typing filters the library

# Gradio's Plotly component has no click event: this hook forwards a click on a point of the map (its track id is
# the point's customdata) to a hidden textbox, whose `input` event runs the Python side. Plotly tells clicks from
# drags (zoom, pan) itself.
MAP_CLICK_JS = """
() => {
  const forward = (data) => {
    const point = data && data.points && data.points[0];
    const box = document.querySelector('#map-click textarea, #map-click input');
    if (!point || point.customdata === undefined || !box) return;
    box.value = `${point.customdata}:${Date.now()}`;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  setInterval(() => {
    const plot = document.querySelector('#library-map .js-plotly-plot');
    if (plot && plot.on && plot.__mynaHooked !== plot._ev) {
      plot.on('plotly_click', forward);
      plot.__mynaHooked = plot._ev;
    }
  }, 300);
}
"""

CSS = """
#search-message:empty, #map-message:empty, #track-message:empty { display: none; }
.myna-problem { border-left: 4px solid #e0a800; padding: 0.4em 0.8em; background: rgba(224, 168, 0, 0.08); }
"""


def _gradio():
    try:
        import gradio as gr
        import plotly  # noqa: F401
    except ImportError:
        raise ImportError("`myna app` needs Gradio and Plotly: pip install 'myna-hf[app]'.") from None
    return gr


# ------------------------------------------------------------------------------------------------ text


def _time(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def header(library) -> str:
    if library.index is None:
        return "## Myna library\nNo tracks yet."
    info = library.index.info
    return (
        f"## Myna library\n{len(library):,} tracks in `{library.store}` · model `{info['model']}` "
        f"({info['patch_mode']} embeddings, {info['dim']} wide) · {info['kind']} index · map: "
        f"{library.layout_method.upper()}"
    )


def problems_text(library) -> str:
    return "\n\n".join(f"⚠️ {problem}" for problem in library.problems)


def result_title(result: dict[str, Any]) -> str:
    text = f"**{result['rank'] + 1}. {result['name']}** · score {result['score']:.3f}"
    if "segment_start" in result:
        text += (
            f" · best 3 s at {_time(result['segment_start'])} ({result['segment_score']:.3f}), matching the query at "
            f"{_time(result['query_segment_start'])}"
        )
    return text


def search_summary(found, track: bool) -> str:
    what = f"the library track **{found.query}**" if track else f"**{found.query}** ({found.query_duration:.1f} s)"
    took = f"{found.seconds * 1000:.0f} ms" if found.seconds >= 0.001 else "under 1 ms"
    text = f"{len(found.results)} nearest tracks to {what}, in {took}."
    if found.results and not found.segments:
        text += " (No timelines in this store: the players start at the beginning.)"
    return text


# ------------------------------------------------------------------------------------------------ the page


@dataclass
class _Slot:
    group: Any
    title: Any
    player: Any
    timeline: Any


def create_app(library, k: int = 10):
    """The Gradio `Blocks` of the app on an opened `LibraryExplorer`; `demo.launch()` serves it."""
    gr = _gradio()
    from .explore_types import LibraryError

    k = max(1, min(k, MAX_RESULTS))  # the page's result slots; the slider shows fewer
    columns = list(library.columns) or ["folder"]
    colour_first = library.default_colour if library.columns else "folder"
    first_names = library.find("", CHOICES)

    with gr.Blocks(title="Myna library", delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown(header(library), elem_id="library-header")
        problems = gr.Markdown(problems_text(library), elem_id="library-problems", elem_classes=["myna-problem"],
                               visible=bool(library.problems))  # fmt: skip
        with gr.Tabs():
            with gr.Tab("Search", id="search"):
                with gr.Row():
                    clip = gr.Audio(
                        sources=["upload", "microphone"], type="filepath", label="A clip to search for (upload or record)",
                        elem_id="query-clip",
                    )  # fmt: skip
                    with gr.Column():
                        query_track = gr.Dropdown(
                            choices=first_names, value=None, label="… or a track of the library (type to filter)",
                            allow_custom_value=True, filterable=True, elem_id="query-track",
                        )  # fmt: skip
                        count = gr.Slider(1, k, value=k, step=1, label="Results", elem_id="result-count")
                        search_button = gr.Button("Search", variant="primary", elem_id="search-button")
                message = gr.Markdown(elem_id="search-message")
                slots = []
                for i in range(k):
                    with gr.Group(visible=False) as group:
                        title = gr.Markdown(elem_id=f"result-{i}-title")
                        with gr.Row(equal_height=True):
                            player = gr.Audio(
                                type="filepath", interactive=False, label="best 3 s on", elem_id=f"result-{i}-player",
                                buttons=["download"], scale=2,
                            )  # fmt: skip
                            timeline = gr.Plot(show_label=False, elem_id=f"result-{i}-timeline", scale=3)
                    slots.append(_Slot(group, title, player, timeline))
            with gr.Tab("Map", id="map"):
                with gr.Row():
                    colour = gr.Dropdown(choices=columns, value=colour_first, label="Colour by", elem_id="map-colour",
                                         scale=1)  # fmt: skip
                    gr.Markdown(
                        "Hover a point for its name; click it to play the track and search from it (the results "
                        "are below and in the Search tab). Drag to zoom, double-click to zoom out.", scale=3,
                    )  # fmt: skip
                library_map = gr.Plot(map_figure(library, colour_first), show_label=False, elem_id="library-map")
                clicked = gr.Textbox(visible="hidden", elem_id="map-click")
                map_message = gr.Markdown(elem_id="map-message")
                with gr.Row():
                    now_playing = gr.Audio(type="filepath", interactive=False, label="Now playing", autoplay=True,
                                           elem_id="map-player", scale=2)  # fmt: skip
                    nearest = gr.Dataframe(
                        headers=["rank", "track", "score"], datatype=["number", "str", "number"], interactive=False,
                        label="Nearest tracks", elem_id="map-nearest", scale=3,
                    )  # fmt: skip
            with gr.Tab("Track", id="track"):
                track = gr.Dropdown(
                    choices=first_names, value=None, label="A track (type to filter)", allow_custom_value=True,
                    filterable=True, elem_id="track-pick",
                )  # fmt: skip
                track_message = gr.Markdown(elem_id="track-message")
                track_player = gr.Audio(type="filepath", interactive=False, label="The track", elem_id="track-player")
                similarity = gr.Plot(show_label=False, elem_id="self-similarity")

        offered: set[str] = set()
        offering = threading.Lock()

        def offer(path: str | None) -> str | None:
            """`path` for a player: Gradio may serve this exact file from now on (its `allowed_paths`). Never a
            folder: Gradio serves everything below one, and beside a track may be anything (keys, web pages)."""
            if path:
                path = os.path.abspath(path)
                with offering:
                    if path not in offered:
                        offered.add(path)
                        demo.allowed_paths.append(path)
            return path

        result_outputs = [message]
        for slot in slots:
            result_outputs += [slot.group, slot.title, slot.player, slot.timeline]

        def show(found, is_track: bool, shown: int) -> list:
            values = [search_summary(found, is_track)]
            for i, slot in enumerate(slots):
                if i >= min(shown, len(found.results)):
                    values += [gr.Group(visible=False), "", None, None]
                    continue
                result = found.results[i]
                start = result.get("segment_start", 0.0)
                clip_path = offer(library.segment_clip(result["id"], start))
                label = f"{result['name']} from {_time(start)}" if clip_path else "(the audio file is not there)"
                values += [
                    gr.Group(visible=True), result_title(result), gr.Audio(value=clip_path, label=label),
                    timeline_figure(result) if "timeline_scores" in result else None,
                ]
            return values

        def failed(error: Exception) -> list:
            return [f"⚠️ {error}"] + [gr.Group(visible=False), "", None, None] * len(slots)

        def search(clip_path, track_name, shown):
            try:
                if clip_path:
                    return show(library.search_clip(clip_path, int(shown)), False, int(shown))
                if track_name:
                    return show(library.search_track(track_name, int(shown)), True, int(shown))
                raise LibraryError("Upload or record a clip, or pick a track of the library, to search.")
            except LibraryError as error:
                return failed(error)

        def search_by_clip(clip_path, shown):
            if not clip_path:  # cleared
                return [gr.skip()] * len(result_outputs)
            return search(clip_path, None, shown)

        def search_by_track(track_name, shown):
            if not track_name:
                return [gr.skip()] * len(result_outputs)
            return search(None, track_name, shown)

        def filter_names(key_up: gr.KeyUpData):
            return gr.Dropdown(choices=library.find(key_up.input_value, CHOICES))

        def on_map_click(value, shown):
            try:
                track_id = int(str(value).split(":")[0])
                name = library.names[track_id]
            except (ValueError, IndexError):
                return [gr.skip()] * (5 + len(result_outputs))
            audio = offer(library.audio_path(track_id))
            note = "" if audio else f"⚠️ The audio of {name} is not where the store says ({library.paths[track_id]})."
            try:
                found = library.search_track(track_id, int(shown))
                rows = [[r["rank"] + 1, r["name"], round(r["score"], 4)] for r in found.results]
                results = show(found, True, int(shown))
            except LibraryError as error:
                rows, results = [], failed(error)
            player = gr.Audio(value=audio, label=f"Now playing: {name}")
            return [player, rows, note, gr.Dropdown(value=name), gr.Dropdown(value=name)] + results

        def show_track(track_name):
            if not track_name:
                return [gr.skip()] * 3
            try:
                track_id = library.track_id(track_name)
                audio = offer(library.audio_path(track_id))
                matrix, starts = library.self_similarity(track_id)
                note = "" if audio else f"⚠️ The audio of {track_name} is not where the store says."
                note = note or (
                    f"{len(starts)} chunks of 3 s, each against each: repeats are bright squares off the diagonal, "
                    "sections are blocks along it."
                )
                return [note, audio, self_similarity_figure(matrix, starts, track_name)]
            except LibraryError as error:
                return [f"⚠️ {error}", None, None]

        search_options = {"outputs": result_outputs, "show_progress": "minimal"}
        clip.upload(search_by_clip, [clip, count], **search_options)
        clip.stop_recording(search_by_clip, [clip, count], **search_options)
        query_track.input(search_by_track, [query_track, count], **search_options)
        search_button.click(search, [clip, query_track, count], api_name="search", **search_options)
        for picker in (query_track, track):
            picker.key_up(filter_names, None, picker, queue=False, show_progress="hidden", trigger_mode="always_last")
        colour.input(lambda name: map_figure(library, name), colour, library_map)
        clicked.change(
            on_map_click, [clicked, count], [now_playing, nearest, map_message, query_track, track] + result_outputs,
        ).then(show_track, track, [track_message, track_player, similarity])
        track.input(show_track, track, [track_message, track_player, similarity])

        def current_problems():  # the query model may still be loading when the page is first served
            try:
                library.wait_for_model()
            except LibraryError as error:
                return gr.Markdown(f"{problems_text(library)}\n\n⚠️ {error}".strip(), visible=True)
            return gr.Markdown(problems_text(library), visible=bool(library.problems))

        demo.load(current_problems, None, problems, show_progress="hidden")
    return demo


def launch(library, host: str | None = DEFAULT_HOST, port: int | None = DEFAULT_PORT, k: int = 10, block: bool = True,
           max_upload_mb: float = MAX_UPLOAD_MB, auth: tuple[str, str] | None = None, **options):  # fmt: skip
    """Serves the app of `library` at http://host:port; returns the Gradio app (`block=False`: in the background;
    then `demo.close()` and `library.close()` stop it and remove its temporary files). `host` / `port` None:
    Gradio's defaults, or its GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (as on a Space). Uploads (and recordings)
    stop at `max_upload_mb`; `auth` (user, password) asks for a login. The page serves the audio files it hands to
    a player, nothing else of the library's folders."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = create_app(library, k)
    demo.queue(default_concurrency_limit=2)
    try:
        demo.launch(
            server_name=host, server_port=port, js=MAP_CLICK_JS, css=CSS, prevent_thread_lock=not block,
            show_error=True, max_file_size=round(max_upload_mb * 2**20), auth=auth, **options,
        )  # fmt: skip
    finally:
        if block:  # stopped (Ctrl+C), or never started
            library.close()
    return demo


def is_loopback(host: str | None) -> bool:
    """Whether `host` serves this machine alone (127.0.0.0/8, ::1, localhost); a name may resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------ the command


@dataclass
class AppArguments:
    index: str | None = field(
        default=None, metadata={"help": "Index folder written by `myna index` (its store is the one it was built from)."}
    )
    store: str | None = field(
        default=None,
        metadata={
            "help": "Store folder written by `myna embed ... --output STORE`. Alone: its index is built (or reused) "
            "in STORE/.myna/index. With --index: where the index's store is now."
        },
    )
    model: str | None = field(
        default=None, metadata={"help": "Model (folder or Hub id) that embeds queries. Default: the store's."}
    )
    host: str = field(
        default=DEFAULT_HOST,
        metadata={"help": "Address to serve on; 0.0.0.0 for other machines (anyone who reaches it can search and "
                  "play the library: see --auth)."},
    )  # fmt: skip
    port: int = field(default=DEFAULT_PORT, metadata={"help": "Port to serve on (0: any free port)."})
    k: int = field(default=10, metadata={"aliases": ["-k"], "help": f"Results shown per search (at most {MAX_RESULTS})."})
    metadata: str | None = field(
        default=None,
        metadata={
            "nargs": "+",
            "help": "CSV files of track tags to colour the map by: a `path` or `file_name` column (absolute, or "
            "relative to the CSV) and any others. `metadata.csv` files beside the tracks are read anyway.",
        },
    )
    layout: Literal["auto", "umap", "pca"] = field(
        default="auto", metadata={"help": "The map: UMAP (needs umap-learn), PCA, or auto (UMAP where installed)."}
    )
    patch_mode: Literal["square", "vertical", "both"] | None = field(
        default=None, metadata={"help": "With --store of a hybrid model: which embedding to index. Default: the store's."}
    )
    audio_root: str | None = field(
        default=None,
        metadata={"help": "Where the library's audio is now, if it moved: the folder that replaces the tracks' common one."},
    )
    auth: str | None = field(
        default=None,
        metadata={"help": "USER:PASSWORD: the page asks for this login (Gradio's auth). Over plain http, and visible "
                  "to this machine's other users in its process list."},
    )  # fmt: skip
    max_upload_mb: float = field(
        default=MAX_UPLOAD_MB, metadata={"help": "The largest upload (or recording) the page accepts, in MB."}
    )
    clip_seconds: float = field(default=10.0, metadata={"help": "Length of a result's player, from its best 3 s."})
    device: str = field(default="cpu", metadata={"help": "Where queries are embedded."})
    prepare: bool = field(
        default=False,
        metadata={"help": "Build the index and the app's caches (map, timelines), print what was done, and exit."},
    )


def app_command(argv: list[str]) -> int:
    from myna_common.cli_support import UsageError, dataclass_parser, parse_into

    parser = dataclass_parser(
        AppArguments,
        prog="myna app",
        description="A web page on a music library: search by example, listen to the best-matching 3 s, the library "
        "as a map, a track's self-similarity. Serves on localhost until interrupted (Ctrl+C).",
    )
    args, _ = parse_into(parser, AppArguments, argv)
    if args.index is None and args.store is None:
        parser.error("give --index INDEX (from `myna index`) or --store STORE (from `myna embed`).")
    if not 0 <= args.port < 65536:
        parser.error(f"--port must be between 0 and 65535, got {args.port}.")
    if not 1 <= args.k <= MAX_RESULTS:
        parser.error(f"-k must be between 1 and {MAX_RESULTS}, got {args.k}.")
    if args.max_upload_mb <= 0:
        parser.error(f"--max_upload_mb must be positive, got {args.max_upload_mb}.")
    auth = None
    if args.auth is not None:
        user, colon, password = args.auth.partition(":")
        if not (user and colon and password):
            parser.error("--auth takes USER:PASSWORD, both not empty (e.g. --auth me:a-long-password).")
        auth = (user, password)
    for folder, option in ((args.index, "--index"), (args.store, "--store"), (args.audio_root, "--audio_root")):
        if folder is not None and not os.path.isdir(folder) and not (option == "--index" and args.store):
            raise UsageError(f"{option} {folder}: no such folder.")
    if not args.prepare:
        import importlib.util

        if importlib.util.find_spec("gradio") is None or importlib.util.find_spec("plotly") is None:
            _gradio()  # says which extra is missing, before the slow part

    from .explore import LibraryExplorer

    library = LibraryExplorer.open(
        index=args.index, store=args.store, metadata=args.metadata or (), audio_root=args.audio_root,
        layout=args.layout, patch_mode=args.patch_mode, device=args.device, load_query_model=False,
        clip_seconds=args.clip_seconds,
    )  # fmt: skip
    timelines = "timelines" if library.has_timelines else "no timelines"
    print(
        f"myna app: {len(library)} tracks, map by {library.layout_method.upper()}, {timelines}; opened in "
        f"{library.opened_in:.1f} s",
        file=sys.stderr,
    )
    for problem in library.problems:
        print(f"myna app: {problem}", file=sys.stderr)
    if args.prepare:
        return 0
    port = args.port or _free_port(args.host)
    if not is_loopback(args.host):
        login = "" if auth else " (--auth USER:PASSWORD asks for a login)"
        print(
            f"myna app: warning: --host {args.host} serves beyond this machine: anyone who reaches port {port} can "
            f"search the library, see its paths and play its tracks{login}.",
            file=sys.stderr,
        )
    # The page first: the query model (torch, transformers, the weights) loads once it is served, while the map
    # and the library's own tracks already answer; a search by a clip waits for it (released however loading
    # ends, at once for an empty library).
    library.expect_query_model()
    try:
        demo = launch(library, args.host, port, args.k, block=False, max_upload_mb=args.max_upload_mb, auth=auth,
                      quiet=True)  # fmt: skip
        print(f"myna app: serving on http://{args.host}:{port} (Ctrl+C to stop)", file=sys.stderr)
        library.load_query_model(args.model)  # here, while Gradio's threads serve
        if library.query_problem:
            print(f"myna app: {library.query_problem}", file=sys.stderr)
        demo.block_thread()  # returns on Ctrl+C, once Gradio has closed its server (and its cache)
    finally:
        library.close()  # the players' WAVs
    print("myna app: stopped", file=sys.stderr, flush=True)
    return 0


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


__all__ = [
    "AppArguments", "app_command", "create_app", "is_loopback", "launch", "map_figure", "self_similarity_figure",
    "timeline_figure",
]  # fmt: skip
