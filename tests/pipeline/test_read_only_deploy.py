"""A tuned bundle served from a read-only volume, or by a user who did not write it.

Containers mount the bundle read-only, often with a read-only root file system, and run
the server as a non-root user. ``load_bundle`` and a query must work there without
writing into the bundle, and where the environment stops them the error must name the
folder and the fix, not blame the bundle ("run the tuning pipeline again").

This machine runs tests as root, where ``chmod`` does not stop writes: the checks run in
a child process under a real read-only bind mount (unprivileged ``unshare``) or as the
``nobody`` user (``setpriv``), and are skipped, saying why, where those are not allowed.
The two children that load and answer are marked ``slow`` (each imports the whole stack).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import write_minimal_version  # tests/pipeline/conftest.py

from llama_index_ragtune.pipeline.bundle import link_or_copy

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
DEAD_PID = 999_999_999  # above pid_max: never a live process

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    out = {}
    def step(name, call):
        try:
            out[name] = "ok " + json.dumps(call(), default=str)
        except Exception as exc:
            out[name] = type(exc).__name__ + ": " + " ".join(str(exc).split())
    from llama_index_ragtune.pipeline import load_bundle
    from llama_index_ragtune.retrievers import HybridRetriever
    bundles = Path(sys.argv[1])
    def serve():
        bundle = load_bundle(bundles)            # the bundle's own tiny decoder, hashes checked
        response = bundle.query_engine.query("apple return policy?")
        grocery = bundle.as_query_engine(filters={"store": "grocery"})
        return [bundle.version, response.metadata.get("cited_node_ids"),
                str(grocery.query("grocery delivery fee"))[:40]]
    step("serve", serve)
    if len(sys.argv) > 2:
        step("private", lambda: load_bundle(sys.argv[2]).version)
    step("missing index", lambda: HybridRetriever.from_persist_dir(bundles.parent / "gone"))
    print("RESULT " + json.dumps(out))
    """
)


def _umask() -> int:
    """This process's umask (Linux reports it; elsewhere the usual 022)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for top, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = os.path.join(top, name)
            st = os.lstat(path)
            size = None if stat.S_ISDIR(st.st_mode) else st.st_size
            out[os.path.relpath(path, root)] = (size, st.st_mtime_ns, st.st_mode)
    return out


def _run_child(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[0][len("RESULT ") :])


def _env(**extra: str) -> dict[str, str]:
    nowhere = "/nonexistent/cache"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "XDG_CACHE_HOME": nowhere,
        "HF_HOME": nowhere,
        "RAGTUNE_CACHE_DIR": nowhere,
        "TORCH_HOME": nowhere,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


@pytest.fixture
def shared_dir(request) -> Path:
    """A folder every user can reach (pytest's own temporary folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="ragtune-deploy-"))
    folder.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    return folder


@pytest.fixture
def deployed(tuned_run, shared_dir) -> Path:
    """A copy of the tuned run's bundles folder, as a deploy step copies it (modes kept)."""
    bundles = shared_dir / "bundles"
    shutil.copytree(tuned_run["out"] / "bundles", bundles)
    (shared_dir / "child.py").write_text(CHILD, encoding="utf-8")
    return bundles


def _unshare_works() -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", "mount --bind / / 2>/dev/null; true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _setpriv_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


# ------------------------------------------------------------------ readable by others


def test_every_bundled_file_is_readable_as_the_umask_allows(tuned_run):
    """Were: the weights (``model.safetensors``, saved ``0600`` by transformers) were linked
    into the bundle private to the user who ran the pipeline, unlike every other file."""
    wanted = 0o444 & ~_umask()
    private = [
        str(path.relative_to(tuned_run["out"]))
        for path in (tuned_run["out"] / "bundles").rglob("*")
        if path.is_file() and path.stat().st_mode & wanted != wanted
    ]
    assert private == []


def test_link_or_copy_shares_a_private_file_as_new_files_are(tmp_path):
    src = tmp_path / "model.safetensors"
    src.write_bytes(b"weights")
    src.chmod(0o600)
    dst = link_or_copy(str(src), str(tmp_path / "bundle.safetensors"))
    mode = stat.S_IMODE(os.stat(dst).st_mode)
    assert mode == 0o600 | (0o444 & ~_umask())
    assert Path(dst).read_bytes() == b"weights"


@pytest.mark.slow  # a child process that loads and answers (~15 s on 2 cores)
def test_a_bundle_written_by_root_is_served_by_another_user(deployed):
    """Served as ``nobody``: loads and answers; a copy made private to its owner (``0600``)
    is refused with the files, the user and the ``chmod`` that fixes it (was: "cannot be
    read ... run the tuning pipeline again", which writes the same private files)."""
    if not _setpriv_works():
        pytest.skip("needs root and setpriv to run the child as another user")
    private = deployed.parent / "private"
    shutil.copytree(deployed, private)
    for path in private.rglob("*.safetensors"):
        path.chmod(0o600)
    before = _snapshot(deployed)
    result = _run_child(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        + [sys.executable, str(deployed.parent / "child.py"), str(deployed), str(private)],
        _env(),
        cwd=deployed.parent,
    )
    assert result["serve"].startswith('ok ["v1"'), result
    refused = result["private"]
    assert refused.startswith("BundleError: ") and "cannot be read by this user" in refused
    assert f"uid {NOBODY}" in refused and f"chmod -R a+rX {private / 'v1'}" in refused
    assert "run the tuning pipeline again" not in refused
    assert _snapshot(deployed) == before


# ------------------------------------------------------------------ read-only mounts


def _read_only_run(deployed: Path, mounts: list[Path]) -> dict[str, str]:
    script = "".join(
        f'mount --bind "{m}" "{m}" && mount -o remount,bind,ro "{m}" && ' for m in mounts
    )
    script += f'cd "{deployed}" && exec "$0" "$1" "$2"'
    return _run_child(
        ["unshare", "-r", "-m", "sh", "-c", script]
        + [sys.executable, str(deployed.parent / "child.py"), str(deployed)],
        _env(),
        cwd=deployed.parent,
    )


@pytest.mark.slow  # a child process that loads and answers (~15 s on 2 cores)
def test_a_bundle_on_a_read_only_mount_answers_and_writes_nothing(deployed):
    """A real read-only bind mount, every cache unwritable: load (hashes checked), the tiny
    decoder's answer and a filtered engine work; an index folder missing beside the
    ``.old-*`` copy an interrupted persist left is a ``PersistenceError`` naming it (its
    recovery cannot rename on the mount), not a raw ``OSError``; nothing changes."""
    if not _unshare_works():
        pytest.skip("unprivileged unshare / bind mounts not permitted here")
    shared = deployed.parent
    shutil.copytree(deployed / "v1" / "index", shared / f"gone.old-{DEAD_PID}-abcdef")
    before = _snapshot(shared)
    result = _read_only_run(deployed, [shared])
    assert result["serve"].startswith('ok ["v1"'), result
    missing = result["missing index"]
    assert missing.startswith("PersistenceError: ") and "gone.old-" in missing, result
    assert _snapshot(shared) == before


def test_a_read_only_root_without_a_temporary_folder_is_named_not_blamed_on_the_bundle(
    deployed,
):
    """Read-only ``/tmp`` and ``/var/tmp`` too (a container's read-only root file system):
    the model libraries cannot start; the error says the process needs a writable
    temporary folder (``TMPDIR``), not that the bundle is damaged (was: "it does not hold
    a model of this kind; run the tuning pipeline again")."""
    if not _unshare_works():
        pytest.skip("unprivileged unshare / bind mounts not permitted here")
    mounts = [deployed, Path("/tmp"), Path("/var/tmp")]
    if not all(m.is_dir() for m in mounts) or not str(deployed).startswith("/tmp/"):
        pytest.skip("needs the bundle under /tmp and a /var/tmp to mount read-only")
    before = _snapshot(deployed)
    result = _read_only_run(deployed, mounts)
    serve = result["serve"]
    assert serve.startswith("BundleError: ") and "no writable temporary folder" in serve, result
    assert "TMPDIR" in serve and "run the tuning pipeline again" not in serve
    assert _snapshot(deployed) == before


# ------------------------------------------------------------------ rollback's own reading


@pytest.mark.parametrize("damage", ["junk", "a link", "a path outside"])
def test_rollback_to_a_version_repairs_a_damaged_current_from_the_command_line(
    tmp_path, capsys, damage
):
    """``ragtune rollback --to v1`` is what the error for a damaged ``CURRENT`` tells the
    user to run; it rewrites ``CURRENT`` and reports the switch from the versions it read
    under the writer lock (was: the command read ``CURRENT`` again first, outside the
    lock, and stopped with a traceback; the rollback never ran)."""
    from llama_index_ragtune.cli import main
    from llama_index_ragtune.pipeline.refresh_writer import read_history

    bundles = tmp_path / "out" / "bundles"
    for version in ("v1", "v2"):
        (bundles / version).mkdir(parents=True)
        write_minimal_version(bundles / version, version)
    pointer = bundles / "CURRENT"
    if damage == "junk":
        pointer.write_bytes(b"\xff\xfev2 \x00")
    elif damage == "a link":
        pointer.symlink_to("v2/notes.txt")
    else:
        pointer.write_text("../../elsewhere\n")
    assert main(["rollback", "--bundle", str(tmp_path / "out"), "--to", "v1"]) == 0
    out = capsys.readouterr().out
    assert "-> v1 (versions: v1, v2)" in out and "CURRENT was missing or damaged" in out
    assert pointer.read_text() == "v1\n" and not pointer.is_symlink()
    assert (bundles / "v2" / "notes.txt").read_text() == "v2"  # a link's target is left alone
    assert read_history(bundles)[-1] | {"time": None} == {
        "action": "rollback",
        "from": None,
        "served": "v1",
        "time": None,
    }


def test_rollback_reports_the_versions_it_switched_between(tmp_path, capsys):
    from llama_index_ragtune.cli import main
    from llama_index_ragtune.pipeline.rollback import switch_version

    bundles = tmp_path / "bundles"
    for version in ("v1", "v2", "v3"):
        (bundles / version).mkdir(parents=True)
        write_minimal_version(bundles / version, version)
    (bundles / "CURRENT").write_text("v3\n")
    assert main(["rollback", "--bundle", str(bundles)]) == 0
    assert "CURRENT: v3 -> v2 (versions: v1, v2, v3)" in capsys.readouterr().out
    assert switch_version(bundles, to="v3") == ("v2", "v3")
