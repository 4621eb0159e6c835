"""Write the git program workload's source tree: ROUNDS snapshots under rounds/<n>/ of a generated
project (text files of several sizes, some binary ones), each round changing, adding and removing files,
so that the history has deltas for gc and repack to find. Run on glibc in the setup step."""

import random
from pathlib import Path

ROUNDS = 5
FILES = 300  # about 8 MB over the rounds: a few seconds of git on glibc here
rng = random.Random(7)
words = [
    "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(3000)
]
files: dict[str, str] = {}
for i in range(FILES):
    lines = [" ".join(rng.choices(words, k=rng.randint(3, 14))) for _ in range(rng.randint(5, 400))]
    files[f"src/mod{i % 23:02d}/file{i:04d}.txt"] = "\n".join(lines) + "\n"
for r in range(ROUNDS):
    root = Path("rounds") / str(r)
    if r:
        for name in rng.sample(sorted(files), FILES // 5):
            lines = files[name].splitlines()
            at = rng.randrange(len(lines))
            lines[at:at] = [" ".join(rng.choices(words, k=8)) for _ in range(rng.randint(1, 20))]
            files[name] = "\n".join(lines) + "\n"
        for name in rng.sample(sorted(files), 5):
            del files[name]
        for j in range(10):
            files[f"src/new{r}/file{j}.txt"] = " ".join(rng.choices(words, k=500)) + "\n"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "blob.bin").write_bytes(rng.randbytes(200_000))
