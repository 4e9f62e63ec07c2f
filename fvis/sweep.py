"""``fvis sweep``: a TOML list of jobs rendered into one resumable run folder, split across ranks
under ``torchrun``.

Each ``[[job]]`` expands into items (``<stem>.png`` + ``<stem>.json``) in fixed chunks of ``batch``
items that render together. An item is finished iff its JSON exists (written last, atomically), so
a sweep killed at any moment and started again with the same command redoes exactly the unfinished
items. A chunk always holds the same items, so an interrupted, resumed or distributed sweep makes
the same images as one uninterrupted process (bit for bit on CPU).
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import objectives

from .classes import resolve_class
from .errors import FvisError
from .hooks import grey_activations
from .files import atomic_write, check_writable, list_images, write_json
from .models import load, top_classes
from .naming import slug
from .progress import progress_bar
from .prototype import make_prototypes, prototype_stem, save_prototype
from .recipes import DEFAULT, RENAMED, Recipe, get_recipe
from .render import render, save_render

DEFAULTS = {"out": None, "steps": 256, "size": None, "seed": 0, "device": "cpu", "batch": 8}
PER_JOB = ("steps", "size", "seed", "batch")  # top-level defaults that a job may override
KINDS = {  # kind -> keys it needs, keys it may have (prototype jobs also pass options through)
    "channel": ({"model", "layer", "channels"}, set()),
    "logit": ({"model", "classes"}, set()),
    "prototype": ({"model", "classes"}, {"per_class", "match"}),
}


@dataclass
class Job:
    """One ``[[job]]``: its settings and items. ``items[i]`` is ``(stem, objective)`` for render
    kinds and ``(stem, (class, k))`` for prototypes; ``chunks`` lists item positions per batch."""

    index: int
    kind: str
    model: str
    folder: str
    settings: dict
    items: list[tuple[str, object]]
    chunks: list[list[int]]
    options: dict


def read_config(path: str | Path) -> tuple[dict, bytes]:
    """The parsed TOML (``FvisError`` naming the line on a syntax error) and its raw bytes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FvisError(f"cannot read config {path}: {e.strerror or e}") from None
    try:
        return tomllib.loads(raw.decode()), raw
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FvisError(f"{path} is not valid TOML: {e}") from None


def plan(cfg: dict, device: str) -> tuple[list[Job], dict]:
    """Validate every job before anything renders: keys, models (loaded once each, on ``device``),
    layers, channel and class ranges (one dry forward per job). Returns the jobs and the models."""
    unknown = set(cfg) - set(DEFAULTS) - {"job"}
    if unknown:
        raise FvisError(f"unknown top-level key(s) {sorted(unknown)}: known are {sorted(DEFAULTS)} and [[job]]")
    base = _settings({**DEFAULTS, **cfg}, "top-level ")
    base["steps_given"] = "steps" in cfg  # prototype jobs otherwise take their recipe's own step count
    tables = cfg.get("job")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise FvisError("the config needs at least one [[job]] table")
    models: dict = {}
    jobs = []
    for j, table in enumerate(tables):
        try:
            jobs.append(_job(j, table, base, models, device))
        except FvisError as e:
            raise FvisError(f"job {j} ({table.get('kind', '?')}): {e}") from None
    return jobs, models


def _settings(table: dict, where: str = "") -> dict:
    """Type-checked ``steps``, ``size``, ``seed``, ``batch``, ``device``, ``out`` of ``table``."""
    out = {k: table[k] for k in DEFAULTS if k in table}
    for key in ("steps", "batch", "seed"):
        v = out.get(key)
        if key in out and (not isinstance(v, int) or isinstance(v, bool) or (key != "seed" and v < 1)):
            raise FvisError(f"{where}{key} must be {'an integer' if key == 'seed' else 'a positive integer'}, got {v!r}")
    size = out.get("size")
    if size is not None:
        hw = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
        if not (isinstance(hw, list) and len(hw) == 2 and all(isinstance(s, int) and s >= 16 for s in hw)):
            raise FvisError(f"{where}size must be N or [H, W] with sides >= 16, got {size!r}")
        out["size"] = tuple(hw)
    for key in ("device", "out"):
        if out.get(key) is not None and not isinstance(out[key], str):
            raise FvisError(f"{where}{key} must be a string, got {out[key]!r}")
    return out


def _job(j: int, table: dict, base: dict, models: dict, device: str) -> Job:
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise FvisError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    needed, optional = KINDS[kind]
    missing = needed - set(table)
    if missing:
        raise FvisError(f"missing key(s) {sorted(missing)}")
    known = needed | optional | {"kind", *PER_JOB}
    extra = {k: v for k, v in table.items() if k not in known}
    if extra and kind != "prototype":
        raise FvisError(f"unknown key(s) {sorted(extra)}: a {kind} job takes {sorted(known)}")
    settings = {**{k: base[k] for k in PER_JOB}, **_settings({k: table[k] for k in PER_JOB if k in table})}
    name = table["model"]
    if not isinstance(name, str):
        raise FvisError(f"model must be a name, got {name!r}")
    if name not in models:
        models[name] = load(name, device=device)
    model = models[name]
    folder = f"{j:02d}_{kind}_{name}"
    if kind == "prototype":
        steps_given = base["steps_given"] or "steps" in table
        return _prototype_job(j, table, folder, settings, model, extra, models, device, steps_given)
    if kind == "channel":
        layer = table["layer"]
        if not isinstance(layer, str):
            raise FvisError(f"layer must be a name, got {layer!r}")
        folder += f"_{layer}"
        objs = [objectives.channel(layer, c) for c in _channels(table["channels"])]
    else:
        objs = [_named_logit(c, model.class_names) for c in _classes(table["classes"])]
    _dry_check(model, objs, settings["size"])
    items = _unique([(slug(o.name), o) for o in objs])
    return Job(j, kind, name, slug(folder), settings, items, _chunks(len(items), settings["batch"]), {})


def _prototype_job(j: int, table: dict, folder: str, settings: dict, model, options: dict, models: dict,
                   device: str, steps_given: bool = True) -> Job:
    """A prototype job; without ``steps`` in the job or at the top level, its recipe's own step count
    (the default recipe's readability was measured at its own 1024 steps, not the sweep's 256)."""
    per_class, match = table.get("per_class", 1), table.get("match")
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise FvisError(f"per_class must be a positive integer, got {per_class!r}")
    if isinstance(match, str) and match.startswith("images:"):
        list_images(match.split(":", 1)[1])
    params = inspect.signature(make_prototypes).parameters
    fields = {f.name for f in dataclasses.fields(Recipe)} | set(RENAMED)  # the recipe says what a renamed field became
    unknown = [k for k in options if (k not in params or k == "progress") and k not in fields]
    if unknown:
        raise FvisError(f"unknown key {unknown[0]!r}: not an option of make_prototypes or a recipe setting")
    given = {k: options.pop(k) for k in list(options) if k in fields}
    recipe = get_recipe(options.pop("recipe", DEFAULT)).replace(match=match, **given)  # checks every setting
    recipe.warn_without_effect(given)
    if not steps_given:
        settings = {**settings, "steps": recipe.steps}
    for key, value in options.items():  # passed through: known names, and the default's type
        default = params[key].default
        if key == "evaluators":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise FvisError(f"evaluators must be a list of model names, got {value!r}")
            for name in value:
                models[name] = models.get(name) or load(name, device=device)
            options[key] = [models[name] for name in value]
        elif default is not None and not isinstance(value, type(default)) and not (
                type(default) is float and type(value) is int):
            raise FvisError(f"{key} must be a {type(default).__name__}, got {value!r}")
    names = model.class_names
    classes = [resolve_class(c, names) for c in _classes(table["classes"])]
    items = _unique([(prototype_stem(c, names[c] if names else str(c), k, per_class), (c, k))
                     for c in classes for k in range(per_class)])
    step = max(1, settings["batch"] // per_class) * per_class  # whole classes per chunk
    return Job(j, "prototype", table["model"], slug(folder), {**settings, "per_class": per_class, "match": recipe.match},
               items, _chunks(len(items), step), {**options, "recipe": recipe})


def _chunks(n: int, step: int) -> list[list[int]]:
    return [list(range(i, min(i + step, n))) for i in range(0, n, step)]


def _channels(value) -> list[int]:
    """``3``, ``"0-15"`` (inclusive) or a list of these."""
    out = []
    for v in value if isinstance(value, list) else [value]:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", v) if isinstance(v, str) else None
        if isinstance(v, int) and not isinstance(v, bool):
            out.append(v)
        elif m and int(m.group(2) or m.group(1)) >= int(m.group(1)):
            out += range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)
        else:
            raise FvisError(f"channels must be integers or ranges like \"0-15\", got {v!r}")
    if not out:
        raise FvisError("channels is empty")
    return out


def _classes(value) -> list[int | str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in values):
        raise FvisError(f"classes must be class indices or names, got {value!r}")
    return values


def _named_logit(c: int | str, names) -> objectives.Objective:
    """A class-logit objective named ``logit:<index>:<class name>`` however the class was given
    (files ``logit_94_hummingbird.png`` for ``94`` and for ``"hummingbird"`` alike)."""
    objective = objectives.class_logit(c, names)  # an index out of range fails in the dry check
    index = int(c) if isinstance(c, int) or str(c).isdigit() else resolve_class(c, names)
    if names and 0 <= index < len(names):
        objective.name = f"logit:{index}:{names[index]}"
    return objective


def _unique(items: list) -> list:
    stems = [s for s, _ in items]
    for s in stems:
        if stems.count(s) > 1:
            raise FvisError(f"{s!r} is listed twice")
    return items


def _dry_check(model, objs, size) -> None:
    """One forward of a grey image: unknown layers, channels or classes raise ``FvisError``."""
    acts = grey_activations(model, set().union(*(o.layers for o in objs)), size)
    for o in objs:
        o.check(acts)


def sweep(config: str | Path, out: str | Path | None = None, progress: bool = True) -> list[str]:
    """Run or resume the sweep in ``config`` (``out`` overrides its ``out``); under ``torchrun``
    (``WORLD_SIZE`` > 1) the unfinished chunks are split across ranks. Returns the
    ``folder/stem`` of every item this process made."""
    start = time.perf_counter()
    cfg, raw = read_config(config)
    world, rank, local = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    device = cfg.get("device", DEFAULTS["device"])
    cuda = isinstance(device, str) and device.startswith("cuda")
    if cuda and world > 1:
        device = f"cuda:{local}"
    jobs, models = plan(cfg, device)
    if not (out or cfg.get("out")):
        raise FvisError("no run folder: give --out RUN_DIR or out = \"RUN_DIR\" in the config")
    run_dir = Path(out or cfg["out"])
    if (run_dir / "config.toml").is_file() and read_config(run_dir / "config.toml")[0] != cfg:
        raise FvisError(f"{run_dir} holds a run of a different config.toml; use another --out")
    check_writable(run_dir)
    if world > 1:
        import torch.distributed as dist

        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        todo = [None]
        if rank == 0:
            for tmp in (p for d in [run_dir, *(run_dir / job.folder for job in jobs)] for p in d.glob(".*.tmp")):
                tmp.unlink(missing_ok=True)  # left by a killed run (complete files are renamed into place)
            if not (run_dir / "config.toml").exists():  # (an existing copy was checked to be the same)
                atomic_write(run_dir / "config.toml", lambda f: f.write(raw))
            todo = [_todo(run_dir, jobs)]
            items, left = sum(len(job.items) for job in jobs), sum(n for *_, n in todo[0])
            print(f"{items - left} done, {left} to do ({len(todo[0])} batch(es) on {world} rank(s)) -> {run_dir}/",
                  flush=True)
        if world > 1:
            dist.broadcast_object_list(todo, src=0)
        mine = todo[0][rank::world]
        made = _run(run_dir, jobs, models, mine, rank, world, device, progress)
        if world > 1:
            dist.barrier()
        if rank == 0:
            done = _write_index(run_dir, jobs)
            print(f"{done} item(s) done in {run_dir}/ (index.json); {left} made now in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        return made
    finally:
        if world > 1:
            dist.destroy_process_group()


def _done(run_dir: Path, job: Job, stem: str) -> bool:
    return (run_dir / job.folder / f"{stem}.json").exists()


def _todo(run_dir: Path, jobs: list[Job]) -> list[tuple[int, int, int]]:
    """``(job, chunk, unfinished items)`` of every chunk with an unfinished item, in config order."""
    out = []
    for job in jobs:
        for c, chunk in enumerate(job.chunks):
            n = sum(not _done(run_dir, job, job.items[i][0]) for i in chunk)
            if n:
                out.append((job.index, c, n))
    return out


def _run(run_dir: Path, jobs: list[Job], models: dict, mine, rank: int, world: int, device: str,
         progress: bool) -> list[str]:
    """Render this rank's chunks; write each unfinished item and log it in ``logs/rank<R>.log``."""
    made = []
    log = run_dir / "logs" / f"rank{rank}.log"
    log.parent.mkdir(exist_ok=True)
    bar = progress_bar(total=sum(n for *_, n in mine), show=progress, unit="item", leave=True,
                       desc="sweep" if world == 1 else f"sweep rank {rank}")
    inner = progress and world == 1
    with bar, open(log, "a") as log_file:
        for j, c, _ in mine:
            job = jobs[j]
            folder = run_dir / job.folder
            settings = {"job": j, "kind": job.kind, **job.settings, "device": device, "rank": rank, "world_size": world,
                        "size": list(job.settings["size"] or models[job.model].input_size)}
            for stem in _make_chunk(job, job.chunks[c], models[job.model], folder, settings, inner):
                made.append(f"{job.folder}/{stem}")
                log_file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{job.folder}/{stem}\n")
                log_file.flush()
                bar.update()
    return made


def _make_chunk(job: Job, chunk: list[int], model, folder: Path, settings: dict, progress: bool):
    """Render one chunk and write its unfinished items; yields each stem written."""
    s = job.settings
    if job.kind == "prototype":
        classes = list(dict.fromkeys(job.items[i][1][0] for i in chunk))
        protos = make_prototypes(model, classes, per_class=s["per_class"], steps=s["steps"], size=s["size"],
                                 seed=s["seed"], progress=progress, **job.options)
        for p in protos:
            if not (folder / f"{p.stem}.json").exists():
                save_prototype(replace(p, settings={**p.settings, "sweep": settings}), folder)
                yield p.stem
        return
    result = render(model, [job.items[i][1] for i in chunk], size=s["size"], steps=s["steps"], seed=s["seed"],
                    progress=progress)
    tops = top_classes(model, result.input)
    for i, pos in enumerate(chunk):
        stem, obj = job.items[pos]
        if not (folder / f"{stem}.json").exists():
            save_render(result, i, model, obj.name, folder / stem, settings, tops[i])
            yield stem


def _write_index(run_dir: Path, jobs: list[Job]) -> int:
    """``index.json``: every item with its job, folder, stem, status and files; returns how many are done."""
    rows = [{"job": job.index, "kind": job.kind, "model": job.model, "folder": job.folder, "stem": stem,
             "status": "done" if _done(run_dir, job, stem) else "missing",
             "paths": [f"{job.folder}/{stem}.png", f"{job.folder}/{stem}.json"]}
            for job in jobs for stem, _ in job.items]
    done = sum(r["status"] == "done" for r in rows)
    write_json({"config": "config.toml", "items": rows, "done": done, "total": len(rows)}, run_dir / "index.json")
    return done
