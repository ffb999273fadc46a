"""``cpabanim app``: the demo as a web page (Gradio), for people who would rather not type a command line.

    pip install 'cpabanim[app]'
    cpabanim app                                  # http://127.0.0.1:7860, the checkpoints under models/checkpoints
    cpabanim app --checkpoint my.pt --port 8000   # one more checkpoint to choose from, another port

Upload a photo and a driving video, pick a checkpoint, the mode and the crop, press Animate: the page shows the
result video and the explanation pictures. Each press is one :func:`cpabanim.commands.demo.photo.animate_photo`
call, so the page and ``cpabanim demo`` give the same video and the same one-line error messages (shown as a
Gradio error instead of on stderr).

It serves on 127.0.0.1 unless ``--host`` says otherwise (the page has no authentication, and anyone who reaches
it can run the model), never makes a Gradio share link, sends no analytics and needs no internet. Gradio is an
optional extra, imported only when the command runs, so that the rest of the CLI works without it.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from cpabanim.config.paths import TRAIN_HINT
from cpabanim.errors import CpabanimError

log = logging.getLogger(__name__)

GRADIO_MISSING = "the web app needs gradio: pip install 'cpabanim[app]'"
# the default of paths.checkpoints, where `cpabanim train` writes <experiment>/seed<seed>/last.pt (and `cpabanim avd`
# <experiment>/avd/seed<seed>/last.pt)
CHECKPOINTS_ROOT = Path("models/checkpoints")
# errors of a full or read-only disk: the user's to fix, one line as in the CLI (cpabanim.cli.main)
DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)
# keyword parameters of animate_photo that the page offers only when the installed library has them
OPTIONAL_OPTIONS = ("paste_back", "face_index")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument(
        "--checkpoint",
        action="extend",
        nargs="+",
        default=[],
        metavar="PATH",
        help=f"checkpoints to offer besides the last.pt files under {CHECKPOINTS_ROOT}",
    )
    parser.add_argument(
        "--share",
        choices=("never",),
        default="never",
        help="a public Gradio share link: never (the page is served only where --host says)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")


def find_checkpoints(root: Path, extra: list[str]) -> list[str]:
    """The choices of the checkpoint list: every ``last.pt`` under ``root`` (what ``cpabanim train`` and ``cpabanim
    avd`` wrote), then the ``--checkpoint`` paths, each once."""
    found = [str(path) for path in sorted(root.glob("**/last.pt"))] if root.is_dir() else []
    return list(dict.fromkeys([*found, *extra]))


def supported_options() -> tuple[str, ...]:
    """The names of :data:`OPTIONAL_OPTIONS` that :func:`animate_photo` accepts: the page passes only those."""
    from cpabanim.commands.demo.photo import animate_photo

    parameters = inspect.signature(animate_photo).parameters
    return tuple(name for name in OPTIONAL_OPTIONS if name in parameters)


def one_line(message: str) -> str:
    """A message in one line, as the CLI prints it (:func:`cpabanim.cli.report_error`: lines joined by ``; ``)."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "unknown error"


def user_message(err: BaseException) -> str | None:
    """The one line the CLI would print for ``err`` (a :class:`CpabanimError`, a full or read-only disk), None
    for a bug (which Gradio reports as one)."""
    if isinstance(err, CpabanimError):
        return one_line(str(err))
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        return f"cannot write {err.filename or 'a file'}: {err.strerror}"
    return None


def upload_path(payload: Any, what: str) -> Path:
    """The file of an upload as Gradio hands it unprocessed (a file-data mapping with its ``path``; the event
    skips Gradio's own preprocessing, so that the library reads the file and words the errors); a
    :class:`CpabanimError` when nothing was uploaded."""
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not path:
        raise CpabanimError(f"upload {what} first")
    return Path(path)


def without_folders(message: str, uploads: list[Path]) -> str:
    """``message`` naming each upload by its file name: Gradio keeps uploads under temporary folders whose
    names say nothing to the user."""
    for path in uploads:
        message = message.replace(f"{path.parent}{os.sep}", "")
    return message


def animate_uploads(
    photo: Any,
    driving: Any,
    checkpoint: str,
    options: dict[str, Any],
    device: str,
    work_root: Path,
) -> tuple[Path, list[Path]]:
    """One press of Animate: :func:`animate_photo` into a fresh folder of ``work_root``; returns the video and
    the explanation pictures (overview first). A user error is re-raised as a :class:`CpabanimError` of one
    line naming the uploads by their file names."""
    from cpabanim.commands.demo.photo import animate_photo

    uploads = [upload_path(photo, "a photo"), upload_path(driving, "a driving video")]
    if not checkpoint:
        raise CpabanimError(f"choose a checkpoint (none found under {CHECKPOINTS_ROOT}: pass --checkpoint PATH)")
    work = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
    out, explain = work / "result.mp4", work / "explain"
    try:
        animate_photo(uploads[0], uploads[1], checkpoint, out, explain_dir=explain, device=device, **options)
    except (CpabanimError, OSError) as err:
        message = user_message(err)
        if message is None:
            raise
        raise CpabanimError(without_folders(message, uploads)) from err
    pictures = sorted(explain.glob("*.png"), key=lambda p: (p.stem != "overview", p.name))
    return out, pictures


def build_app(checkpoints: list[str], device: str, work_root: Path):
    """The page: the inputs, the Animate button, the result video and the explanation gallery (a
    :class:`gradio.Blocks`, not launched)."""
    import gradio as gr

    from cpabanim.commands.demo.photo import CROPS, animate_photo
    from cpabanim.models.full import ANIMATION_MODES

    defaults = {name: p.default for name, p in inspect.signature(animate_photo).parameters.items()}
    optional = supported_options()

    def animate(photo, driving, checkpoint, mode, crop, paste, face, progress=gr.Progress(track_tqdm=True)):
        """The Animate button (Gradio reads the progress tracker off the default; tqdm bars feed it)."""
        progress(0, desc="reading the inputs and the checkpoint")
        # paste ticked: the library's default (paste back with crop=face, not with none), as `cpabanim demo`
        values = {"paste_back": None if paste else False, "face_index": int(face or 0)}
        options = {"mode": mode, "crop": crop, **{name: values[name] for name in optional}}
        try:
            out, pictures = animate_uploads(photo, driving, checkpoint, options, device, work_root)
        except CpabanimError as err:
            log.info("animate: %s", err)
            raise gr.Error(str(err), print_exception=False) from None
        return str(out), [(str(p), p.stem) for p in pictures]

    with gr.Blocks(title="cpabanim", analytics_enabled=False) as app:
        gr.Markdown(
            "# cpabanim: animate a photo\n"
            "Upload a photo and a driving video, choose a checkpoint, press **Animate**: the photo moves as the "
            "video does (same as `cpabanim demo`)."
        )
        with gr.Row():
            photo = gr.Image(
                type="filepath", image_mode=None, sources=["upload"], label="photo", elem_id="photo", height=320
            )
            driving = gr.Video(sources=["upload"], label="driving video", elem_id="driving", height=320)
        with gr.Row():
            checkpoint = gr.Dropdown(
                checkpoints,
                value=checkpoints[0] if checkpoints else None,
                label="checkpoint",
                elem_id="checkpoint",
                scale=2,
            )
            mode = gr.Radio(list(ANIMATION_MODES), value=defaults["mode"], label="mode", elem_id="mode")
            crop = gr.Radio(
                list(CROPS), value=defaults["crop"], label="crop (face: detect and crop the faces)", elem_id="crop"
            )
            # an option the installed library lacks is a placeholder (gr.State), so that the inputs keep their order
            paste = gr.State(None)
            if "paste_back" in optional:
                paste = gr.Checkbox(value=True, label="paste the face back into the whole photo (crop face)")
            face = gr.State(0)
            if "face_index" in optional:
                face = gr.Number(value=defaults["face_index"], precision=0, minimum=0, label="face (0 = the largest)")
        button = gr.Button("Animate", variant="primary", elem_id="animate")
        with gr.Row():
            result = gr.Video(label="result", interactive=False, autoplay=True, loop=True, elem_id="result")
            gallery = gr.Gallery(label="explanation", columns=3, elem_id="explanation")
        # preprocess=False: the library reads the uploads itself, so that a huge or unreadable image gets its
        # message (Gradio's preprocessing would open the image first and fail with a generic error)
        button.click(
            animate,
            inputs=[photo, driving, checkpoint, mode, crop, paste, face],
            outputs=[result, gallery],
            preprocess=False,
        )
    return app


def run(args: argparse.Namespace) -> int:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: it reads the variable then
    try:
        import gradio  # noqa: F401 - only to say which extra is missing
    except ImportError:
        raise CpabanimError(GRADIO_MISSING) from None
    checkpoints = find_checkpoints(CHECKPOINTS_ROOT, args.checkpoint)
    if not checkpoints:
        raise CpabanimError(
            f"no checkpoint to offer: none under {CHECKPOINTS_ROOT}/**/last.pt; pass --checkpoint PATH, or {TRAIN_HINT}"
        )
    from cpabanim.commands.demo.photo import demo_device

    demo_device(args.device)  # no CUDA here: one line now, not at the first press of Animate
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, one INFO line each
    with tempfile.TemporaryDirectory(prefix="cpabanim-app-") as work_root:
        app = build_app(checkpoints, args.device, Path(work_root))
        app.queue(default_concurrency_limit=1)  # one animation at a time: the model holds the device
        serve(app, args.host, args.port)
        print(f"cpabanim app: http://{args.host}:{args.port} ({len(checkpoints)} checkpoints)", flush=True)
        stop_on_sigterm()
        app.block_thread()  # until Ctrl-C or SIGTERM: Gradio closes the server, the folder above is removed
    return 0


def stop_on_sigterm() -> None:
    """Let SIGTERM (``kill``, a service manager) stop the app as Ctrl-C does, so that it removes its temporary
    folder of results instead of dying with it left behind."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def serve(app, host: str, port: int) -> None:
    """Start serving ``app`` on ``host:port`` (in the background): no share link, no server-side rendering (it
    would need Node.js), no MCP server; a port in use or an address this machine lacks is one line."""
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            ssr_mode=False,
            mcp_server=False,
            quiet=True,
            prevent_thread_lock=True,
        )
    except OSError as err:  # Gradio's message names its own settings (GRADIO_SERVER_PORT): say it in our words
        raise CpabanimError(
            f"cannot serve on {host}:{port}: the port is taken or the address is not this machine's "
            "(choose another --port or --host)"
        ) from err
