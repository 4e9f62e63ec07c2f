"""MkDocs hook: the committed results/ folder (benchmark tables, result write-ups, their pictures) is
part of the site as it is in the repository, included rather than copied into docs/, so pages link
to `results/...` exactly as the README does and `mkdocs build --strict` checks those links."""
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {".md", ".png", ".jpg", ".svg", ".json", ".csv", ".txt"}


def on_files(files, config):
    for path in sorted((ROOT / "results").rglob("*")):
        if path.is_file() and path.suffix.lower() in SUFFIXES and not any(p.startswith(".") for p in path.parts):
            files.append(File(path.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"],
                              config["use_directory_urls"]))
    return files
