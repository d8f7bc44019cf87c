"""./build.py: build boards, boot them, lock their packages, run the tests."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from . import hosttools, log
from .cache import Cache, default_root
from .config import find_root, list_boards, load_project
from .errors import ApbuildError
from .remote import Remote
from .run import interactive, run
from .stage import Runner

USAGE = """\
./build.py BOARD [--output DIR]     build a board (a name under boards/ or a .toml path), or
                                    PRODUCT@MACHINE: any product on any machine it runs on
./build.py --all                    build every board
./build.py --list                   list the boards and every PRODUCT@MACHINE, with descriptions
./build.py run BOARD                boot the built image in QEMU (serial console here)
./build.py lock BOARD               resolve the packages again and rewrite the lockfile
./build.py show BOARD               print the board as loaded, with its layout and recipes
./build.py keygen                   make the ed25519 update signing key ($APBUILD_KEY_DIR or
                                    ~/.config/apbuild/keys); builds made later carry its public key
./build.py sign BOARD               build, then write the signed update <platform>-<version>.update
./build.py publish BOARD [--output FEED] [--min-version N]
                                    build, sign and add the update to the update feed FEED
                                    (default out/feed): its signed index names the latest
                                    version of each platform; devices fetch it with update-feed
./build.py test [PYTEST ARGS]       run the unit tests and the QEMU tests
./build.py clean [--keep-days N]    remove stage results no build used in N days (default 14;
                                    0: all of them); downloads stay
common options: --cache DIR (default ~/.cache/apbuild or $APBUILD_CACHE), -v/-vv,
  --cache-remote oci://HOST[:PORT]/REPO (or $APBUILD_CACHE_REMOTE: a shared cache in an OCI
  registry, asked before building or downloading, given what this build made),
  --image-version N (build/sign/publish: this image version instead of the board's image_version)"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="./build.py", usage=USAGE, add_help=True)
    p.add_argument("words", nargs="*")
    p.add_argument("--list", action="store_true")
    p.add_argument("--all", action="store_true")
    p.add_argument("--output", type=Path)
    p.add_argument("--cache", type=Path)
    p.add_argument("--cache-remote", default=os.environ.get("APBUILD_CACHE_REMOTE", ""))
    p.add_argument("--image-version")
    p.add_argument("--min-version", default="0")
    p.add_argument("--keep-days", type=float, default=14.0)
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def output_dir(root: Path, board: str, option: Path | None) -> Path:
    return option if option is not None else root / "out" / board


def _project(root: Path, name: str, args: argparse.Namespace):
    project = load_project(root, name)
    if args.image_version:
        if not args.image_version.isdigit():
            raise ApbuildError(f"--image-version: '{args.image_version}' is not a number like the "
                               f"manual's labels (e.g. 140002)")
        board = dataclasses.replace(project.board, image_version=args.image_version)
        project = dataclasses.replace(project, board=board)
    return project


def cmd_list(root: Path) -> int:
    """The named boards, then every compatible product on every machine, each with its line."""
    from .machines import pairings

    rows = [(name, load_project(root, name).board.description) for name in list_boards(root)]
    rows += pairings(root)
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_build(root: Path, boards: list[str], args: argparse.Namespace, cache: Cache) -> int:
    from .pipeline import build

    hosttools.ensure(hosttools.BUILD_TOOLS)
    for name in boards:
        start = time.monotonic()
        project = _project(root, name, args)
        out = output_dir(root, project.board.name, args.output)
        result = build(project, cache, out)
        took = time.monotonic() - start
        verb = "built" if result.did_work else "up to date"
        for kind, path in result.outputs.items():
            log.info(f"{project.board.name}: {verb}: {path} ({path.stat().st_size / 1e6:.1f} MB apparent)")
        log.info(f"{project.board.name}: {verb} in {took:.1f}s")
    return 0


def cmd_clean(cache: Cache, keep_days: float) -> int:
    from .retention import clean

    if keep_days < 0:
        raise ApbuildError(f"--keep-days: {keep_days:g} is negative; give 0 or more days")
    done = clean(cache, keep_days)
    log.info(f"clean: removed {done.removed} stage results not used in {keep_days:g} days "
             f"({done.freed / 1e9:.2f} GB freed), kept {done.kept}")
    return 0


def cmd_run(root: Path, board: str, args: argparse.Namespace, cache: Cache) -> int:
    """Boot the built image with its serial console on this terminal (like `mkosi qemu`)."""
    from . import images
    from .inputs import BuildInputs
    from .qemu import RESET_MARKER, choose_accel, command, gateway_loader, log_launch

    project = load_project(root, board)
    out = output_dir(root, project.board.name, args.output)
    b = project.board
    image = out / (b.outputs.qcow2 or b.outputs.raw)
    if not image.exists():
        raise ApbuildError(f"{image} does not exist: build it first with './build.py {board}'")
    forwards = {22: 2222, 80: 8080, 443: 8443}
    if b.bootloader != "gateway":
        # The accelerator probe boots this board's own kernel (from the cache the build used).
        kernel = images.kernel_image(Runner(cache), BuildInputs.read(project, cache)).path
        launch = command(b, image, serial="mon:stdio", forwards=forwards,
                         accel=choose_accel(b, kernel, cache.root))
        log_launch(launch)
        log.info(f"booting {image} (ssh: port 2222, http: 8080, https: 8443; quit with Ctrl-A X)")
        return interactive(launch.argv)
    # A gateway: the installation image written onto a disk of the board's size, booted by
    # the emulated loader, which starts the next boot whenever the guest reboots.
    disk = out / f"{b.name}-disk.img"
    if not disk.exists() or disk.stat().st_mtime < image.stat().st_mtime:
        run(["cp", "--sparse=always", image, disk])
        run(["truncate", "-s", b.disk_size, disk])
        log.info(f"{disk}: {image.name} on an empty {b.disk_size} disk")
    serial_log = out / f".{b.name}-serial.log"
    while True:
        loaded = gateway_loader(b, disk, out / ".loader")
        serial_log.unlink(missing_ok=True)
        launch = command(b, disk, serial="chardev:console", forwards=forwards, accel="tcg",
                         **loaded.qemu_args(),
                         extra=("-chardev", f"stdio,id=console,mux=on,signal=on,logfile={serial_log}",
                                "-mon", "chardev=console"))
        log_launch(launch)
        log.info(f"loader: booting {loaded.mode} from {disk.name} (ssh: port 2222, http: port 8080; "
                 f"quit with Ctrl-A X)")
        rc = interactive(launch.argv)
        if rc != 0 or RESET_MARKER not in serial_log.read_bytes():
            return rc


def cmd_lock(root: Path, board: str, cache: Cache) -> int:
    from . import debian, lockfile, mirror, pipeline

    project = load_project(root, board)
    path = project.board.lockfile
    with log.step(f"lock: resolve {len(project.packages)} packages for {project.board.arch}"):
        new = debian.lock(project.board.arch, project.packages, project.exclude_packages,
                          mirror.sources(), cache)
    new = pipeline.lock_python(project, new, cache)
    old = lockfile.read(path) if path.exists() else None
    changes = lockfile.diff(old, new) if old else [(p.name, None, p.version) for p in new.packages]
    for name, before, after in changes:
        log.info(f"  {name}: {before or '(new)'} -> {after or '(removed)'}")
    if not changes:
        log.info(f"{path}: no package changed")
    lockfile.write(path, new)
    dists = sum(len(v.dists) for v in new.venvs)
    log.info(f"wrote {path} ({len(new.packages)} packages" + (f", {dists} Python distributions)" if dists else ")"))
    return 0


def cmd_show(root: Path, board: str) -> int:
    import dataclasses

    project = load_project(root, board)
    from .layout import place

    def dump(obj: object, indent: str = "") -> None:
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            if f.name == "path":
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                print(f"{indent}[{f.name}]")
                dump(value, indent + "  ")
            else:
                print(f"{indent}{f.name} = {value!r}")

    print(f"# {project.board.path}")
    dump(project.board)
    print(f"\n# layout {project.layout.name} ({project.layout.path})")
    for p in place(project.layout):
        size = "rest" if p.size_sectors is None else f"{p.size_sectors * 512 // 2**20} MiB"
        print(f"  {p.device}  {p.name:7} {p.filesystem:6} start {p.start_sector:>8}  {size}")
    print("\n# recipes")
    for r in project.recipes:
        print(f"  {r.name}: {r.description}")
    print(f"\n# packages requested: {' '.join(project.packages)}")
    return 0


def cmd_keygen() -> int:
    from . import signing

    key = signing.keygen(signing.default_dir())
    log.info(f"wrote {key.private} (private: keep it, never in a repository) and {key.public}")
    return 0


def _update_payload(root: Path, name: str, args: argparse.Namespace, cache: Cache):
    """The project and sda1's filesystem of its build: what an update carries (the disk and
    its outputs are not needed for it)."""
    from .pipeline import boot_image

    hosttools.ensure(hosttools.BUILD_TOOLS)
    project = _project(root, name, args)
    return project, boot_image(project, cache)


def cmd_sign(root: Path, name: str, args: argparse.Namespace, cache: Cache) -> int:
    from . import lockfile, signing, update

    project, payload = _update_payload(root, name, args, cache)
    key = signing.key_in(signing.default_dir())
    out = output_dir(root, project.board.name, args.output) / update.file_name(
        project.board.platform, project.board.image_version)
    out.parent.mkdir(parents=True, exist_ok=True)
    epoch = lockfile.source_date_epoch(lockfile.read(project.board.lockfile))
    update.make(project.board.platform, project.board.image_version, payload, key, out, epoch)
    log.info(f"{project.board.name}: signed update {out} ({out.stat().st_size / 1e6:.1f} MB, "
             f"key {key.fingerprint})")
    return 0


def cmd_publish(root: Path, name: str, args: argparse.Namespace, cache: Cache) -> int:
    from . import feed, lockfile, signing

    project, payload = _update_payload(root, name, args, cache)
    key = signing.key_in(signing.default_dir())
    directory = args.output if args.output is not None else root / "out" / "feed"
    epoch = lockfile.source_date_epoch(lockfile.read(project.board.lockfile))
    entry = feed.publish(directory, project.board.platform, project.board.image_version, payload,
                         key, epoch, args.min_version)
    log.info(f"{project.board.name}: published {entry.platform} {entry.version} in {directory} "
             f"({entry.file}, {entry.size / 1e6:.1f} MB, from {entry.min_version} on; key {key.fingerprint})")
    return 0


def test_workers() -> int:
    """QEMU guests at a time: one per core and one more, at most 4; APBUILD_TEST_WORKERS
    overrides (1 runs the suite in this process). TCG runs a guest's CPU on a host thread,
    but a guest also waits (its disk, the host's side of a test, a test's own pauses): on 2
    cores the suite took 42.2 and 41.9 min with 3 workers against 45.1 and 47.6 with 2, the
    CPU busy 95% or more for most of the run."""
    if value := os.environ.get("APBUILD_TEST_WORKERS"):
        if not value.isdigit() or int(value) < 1:
            raise ApbuildError(f"APBUILD_TEST_WORKERS={value!r}: a whole number of workers, 1 or more")
        return int(value)
    return max(1, min((os.cpu_count() or 1) + 1, 4))


def _parallel(extra: list[str]) -> list[str]:
    """pytest-xdist's options, unless the arguments choose for themselves. The tests that
    share a booted machine stay together (the root conftest.py marks them)."""
    chosen = any(a in ("-n", "--numprocesses", "-p", "--dist") or a.startswith(("-n", "--numprocesses=", "--dist="))
                 for a in extra)
    workers = test_workers()
    if chosen or workers == 1:
        return []
    try:
        import xdist  # noqa: F401
    except ImportError:
        log.warn("pytest-xdist is not installed: the tests run one at a time")
        return []
    return ["-n", str(workers), "--dist", "loadgroup"]


def cmd_test(root: Path, extra: list[str]) -> int:
    hosttools.ensure({**hosttools.BUILD_TOOLS, **hosttools.TEST_TOOLS})
    # Paths among the arguments choose what runs; otherwise everything does.
    named = any(Path(a.split("::")[0]).exists() for a in extra if not a.startswith("-"))
    argv = [sys.executable, "-m", "pytest", *([] if named else ["tests", "qemu-tests"]),
            *_parallel(extra), *extra]
    log.info("+ " + " ".join(argv[2:]))
    return interactive(argv, cwd=root)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:  # everything after 'test' belongs to pytest (-x, -k, -m ...)
        try:
            return cmd_test(find_root(), argv[1:])
        except ApbuildError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
    args = _parser().parse_args(argv)
    log.set_verbosity(args.verbose)
    root = find_root()
    try:
        remote = Remote(args.cache_remote) if args.cache_remote else None
    except ApbuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    cache = Cache(args.cache or default_root(), remote=remote)
    words = args.words
    try:
        if args.list:
            return cmd_list(root)
        if args.all:
            return cmd_build(root, list_boards(root), args, cache)
        if words == ["keygen"]:
            return cmd_keygen()
        if words == ["clean"]:
            return cmd_clean(cache, args.keep_days)
        if len(words) == 2 and words[0] == "sign":
            return cmd_sign(root, words[1], args, cache)
        if len(words) == 2 and words[0] == "publish":
            return cmd_publish(root, words[1], args, cache)
        if len(words) == 2 and words[0] in ("run", "lock", "show"):
            verb, board = words
            if verb == "run":
                return cmd_run(root, board, args, cache)
            if verb == "lock":
                return cmd_lock(root, board, cache)
            return cmd_show(root, board)
        if len(words) == 1:
            return cmd_build(root, words, args, cache)
        print(USAGE, file=sys.stderr)
        return 2
    except ApbuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished stages stay cached; run the command again to resume",
              file=sys.stderr)
        return 130
