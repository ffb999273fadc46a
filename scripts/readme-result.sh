#!/bin/sh
# The README's first picture, docs/images/readme-result.gif: the embedded default's model (what `make run` trains:
# synthetic data, 450 CPU steps, 64 px) animating the first frame of one of its held-out test videos with the
# motion of another (`cpabanim demo`, relative mode), source | driving | result. Run from the repository root
# after `make run`; it writes only the GIF (and outputs/readme-result.mp4).
set -eu
BIN=${BIN:-.venv/bin}
TEST=data/processed/test
# the first and the last test video by name (the embedded default's: astronaut.test003, rocket.test000)
SOURCE=$TEST/${SOURCE:-$(ls "$TEST" | head -n 1)}
DRIVING=$TEST/${DRIVING:-$(ls "$TEST" | tail -n 1)}
"$BIN/cpabanim" demo --source "$SOURCE/00000.png" --driving "$DRIVING" --crop none --panels all \
    --out outputs/readme-result.mp4 --device cpu
"$BIN/python" - <<'PY'
from PIL import Image

from cpabanim.data.video import read_video

frames = read_video("outputs/readme-result.mp4")
scale = 2  # 64-px panels are small on a README page: doubled, nearest neighbour (no invented detail)
images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
images[0].save("docs/images/readme-result.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
print(f"docs/images/readme-result.gif: {len(images)} frames, {images[0].size[0]}x{images[0].size[1]}")
PY
