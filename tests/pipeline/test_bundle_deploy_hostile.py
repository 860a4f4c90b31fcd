"""Bundles deployed the way production systems do it, tried from the outside.

A deployed bundle sits on a read-only location, is copied, moved, renamed or reached
through a link (paths with spaces and non-ASCII letters), is loaded by many threads and
processes at once, while ``ragtune rollback`` moves ``CURRENT``, and next to the
unfinished version folders an interrupted copy or a killed writer left. Loading must
write nothing, answer the same wherever the folder is, give each load one whole
version, and say what it skipped.

Tests run as root here, where ``chmod`` does not stop writes: the read-only tests check
that nothing in the folder was created, changed or deleted (names, sizes, times,
modes), and a real read-only mount is tried where ``unshare`` allows it unprivileged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from llama_index.core.llms import MockLLM

from llama_index_ragtune.pipeline import (
    BundleError,
    bundle_versions,
    current_version,
    load_bundle,
    rollback_bundle,
    set_current_version,
)
from llama_index_ragtune.pipeline.bundle_folders import bundle_lock, next_version

QUESTIONS = ("apple return policy?", "grocery delivery fee")
DEAD_PID = 999_999_999  # above pid_max: never a live process
ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def original(tuned_run, tmp_path_factory) -> Path:
    """A bundles folder with two complete versions (v2 = v1 served with top k 3); CURRENT v1."""
    root = tmp_path_factory.mktemp("deploy") / "bundles"
    shutil.copytree(tuned_run["out"] / "bundles", root)
    shutil.copytree(root / "v1", root / "v2")
    manifest = json.loads((root / "v2" / "manifest.json").read_text())
    manifest["version"] = "v2"
    manifest["retrieval"]["similarity_top_k"] = 3
    (root / "v2" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (root / "CURRENT").write_text("v1\n")
    return root


@pytest.fixture
def bundles(original, tmp_path) -> Path:
    """A private copy of ``original`` (tests move, lock and edit it)."""
    return shutil.copytree(original, tmp_path / "out" / "bundles", symlinks=True)


@pytest.fixture(scope="module")
def expected(original) -> dict:
    return answers(load(original))


def load(path, version=None, **kwargs):
    return load_bundle(path, version, llm=MockLLM(), **kwargs)


def answers(bundle) -> dict:
    """What a bundle serves: ranked node ids and scores, the answer text and its citations."""
    out = {"version": bundle.version}
    for question in QUESTIONS:
        nodes = bundle.retriever.retrieve(question)
        response = bundle.query_engine.query(question)
        out[question] = {
            "ranked": [(n.node.node_id, round(float(n.score), 5)) for n in nodes],
            "answer": str(response),
            "cited": response.metadata.get("cited_node_ids"),
        }
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (and ``root``): type, size, modification time, mode."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = os.path.join(top, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (
                stat.S_IFMT(st.st_mode),
                st.st_size if not stat.S_ISDIR(st.st_mode) else None,
                st.st_mtime_ns,
                st.st_mode,
            )
    return out


def changes(before: dict, after: dict) -> dict:
    return {
        "created": sorted(set(after) - set(before)),
        "deleted": sorted(set(before) - set(after)),
        "changed": sorted(k for k in before if k in after and before[k] != after[k]),
    }


NOTHING = {"created": [], "deleted": [], "changed": []}


def make_read_only(root: Path, request) -> None:
    subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)
    request.addfinalizer(lambda: subprocess.run(["chmod", "-R", "u+w", str(root)], check=False))
    if os.geteuid() != 0:  # chmod stops writes: prove it
        with pytest.raises(PermissionError):
            (root / "probe").write_text("x")


def plant_leftovers(root: Path) -> list[str]:
    """What killed writers and interrupted copies leave beside complete versions."""
    names = [f"v1.tmp-{DEAD_PID}-abcdef", f"v7.tmp-{DEAD_PID}-0a0b0c", "v6"]
    for name in names:
        (root / name).mkdir()
        (root / name / "partial.bin").write_bytes(b"\0" * 10)
    return names


# ------------------------------------------------------------------ read-only location


def test_loading_and_querying_a_read_only_bundle_writes_nothing_there(bundles, request):
    """No lock file, cache, export or debris appears, and leftovers are not cleaned up."""
    from llama_index_ragtune.embeddings import default_embed_model
    from llama_index_ragtune.retrievers import HybridRetriever

    planted = plant_leftovers(bundles)
    make_read_only(bundles, request)
    before = snapshot(bundles)
    bundle = load(bundles)  # every hash checked
    answers(bundle)
    bundle.as_query_engine(filters={"store": "grocery"}).query(QUESTIONS[0])
    load(bundles / "v2", refusal_policy=None).query_engine.query(QUESTIONS[1])
    with pytest.raises(BundleError, match="v6"):
        load(bundles, "v6")
    with pytest.raises(BundleError, match="v7"):
        load(bundles, "v7")
    # the persisted hybrid index on its own
    index = HybridRetriever.from_persist_dir(
        bundles / "v1" / "index", embed_model=default_embed_model(str(bundles / "v1" / "encoder"))
    )
    assert index.retrieve(QUESTIONS[0])
    assert changes(before, snapshot(bundles)) == NOTHING
    assert all((bundles / name).is_dir() for name in planted)


def test_a_version_a_killed_writer_left_only_as_its_replaced_copy_loads_read_only(
    bundles, request, caplog
):
    """``v1`` missing, its complete ``v1.old-*`` present: served from there, nothing renamed."""
    old = bundles / f"v1.old-{DEAD_PID}-abcdef"
    os.rename(bundles / "v1", old)
    make_read_only(bundles, request)
    before = snapshot(bundles)
    with caplog.at_level(logging.WARNING):
        bundle = load(bundles, verify=False)
    assert bundle.version == "v1" and bundle.path == old
    assert old.name in caplog.text
    assert changes(before, snapshot(bundles)) == NOTHING


def _unshare_works() -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


CHILD = textwrap.dedent(
    """
    import json, sys
    from llama_index_ragtune.pipeline import BundleError, load_bundle, rollback_bundle
    from llama_index_ragtune.pipeline import set_current_version
    bundle = load_bundle(sys.argv[1])            # the bundled decoder, every hash checked
    response = bundle.query_engine.query("apple return policy?")
    out = {"version": bundle.version, "cited": response.metadata.get("cited_node_ids")}
    for name, call in (("rollback", lambda: rollback_bundle(sys.argv[1], to="v2")),
                       ("set_current", lambda: set_current_version(sys.argv[1], "v2"))):
        try:
            call()
            out[name] = "done"
        except BundleError as exc:
            out[name] = "BundleError: " + str(exc)
        except OSError as exc:
            out[name] = "OSError: " + str(exc)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
def test_a_bundle_on_a_read_only_mount_with_unwritable_caches_loads_answers_and_refuses_writes(
    bundles, tmp_path
):
    """A real read-only bind mount (unprivileged ``unshare``) and every cache folder
    unwritable (under ``/dev/null``): load, a decoder answer, and rollback / set_current
    as one-line ``BundleError``s saying the folder is read-only (were raw ``OSError``)."""
    if not _unshare_works():
        pytest.skip("unprivileged unshare / mount not available")
    mount = tmp_path / "mnt ro ü"
    mount.mkdir()
    before = snapshot(bundles)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    nowhere = "/dev/null/cache"
    env = {
        **os.environ,
        "HOME": nowhere,
        "XDG_CACHE_HOME": nowhere,
        "HF_HOME": nowhere,
        "RAGTUNE_CACHE_DIR": nowhere,
        "TORCH_HOME": nowhere,
        "SENTENCE_TRANSFORMERS_HOME": nowhere,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(ROOT),
    }
    shell = 'mount --bind -o ro "$1" "$2" && exec "$3" "$4" "$2"'
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell, "sh"]
        + [str(bundles), str(mount), sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT ") :])
    assert result["version"] == "v1" and result["cited"] is not None
    for name in ("rollback", "set_current"):
        assert result[name].startswith("BundleError: ") and "read-only" in result[name], result
    assert changes(before, snapshot(bundles)) == NOTHING


# ------------------------------------------------------------------ moved, linked, renamed


def _relocate(how: str, bundles: Path, tmp_path: Path) -> Path:
    away = tmp_path / "elsewhere" / "déploiement ü" / "with space" / "バンドル"
    away.parent.mkdir(parents=True)
    if how == "copied":
        return shutil.copytree(bundles.parent, away)
    if how == "moved":  # the original place is gone afterwards
        shutil.move(str(bundles.parent), str(away))
        return away
    if how == "renamed bundles folder":
        os.rename(bundles, bundles.with_name("prod models 2"))
        return bundles.with_name("prod models 2")
    if how == "linked out folder":
        away.symlink_to(bundles.parent, target_is_directory=True)
        return away
    if how == "linked version folder":  # a deploy tool pointing a link at one version
        away.symlink_to(bundles / "v1", target_is_directory=True)
        return away
    if how == "version copied alone":
        return shutil.copytree(bundles / "v1", away)
    if how == "version folder a link":  # bundles/v1 -> a folder on another disk
        shutil.move(str(bundles / "v1"), str(away))
        (bundles / "v1").symlink_to(away, target_is_directory=True)
        return bundles
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "copied",
        "moved",
        "renamed bundles folder",
        "linked out folder",
        "linked version folder",
        "version copied alone",
    ],
)
def test_a_relocated_or_linked_bundle_answers_the_same(bundles, tmp_path, expected, how):
    path = _relocate(how, bundles, tmp_path)
    assert answers(load(path)) == expected


def test_a_version_folder_linked_outside_its_bundles_folder_is_refused_the_target_loads(
    bundles, tmp_path, expected
):
    """bundles/v1 -> a folder on another disk: never served through the link (round s42:
    as a manifest, CURRENT or a file a link leads outside is refused); the folder itself,
    passed as the version, loads."""
    path = _relocate("version folder a link", bundles, tmp_path)
    with pytest.raises(BundleError, match=r"v1 is a symbolic link .*leading outside"):
        load(path)
    assert answers(load(os.path.realpath(path / "v1"))) == expected


# ------------------------------------------------------------------ threads and processes


def test_threads_loading_at_once_answer_the_same(original, expected):
    results, errors = [], []

    def work():
        try:
            results.append(answers(load(original, verify=False)))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [expected] * 4


def test_concurrent_loads_leave_logging_as_it_was_and_other_threads_heard(
    original, monkeypatch, caplog
):
    """Two loads overlapping, the second finishing last: the index loader's logger keeps its
    level, and a warning logged meanwhile by another thread is not swallowed (were: the
    logger left at ERROR for the whole process, and the warning lost)."""
    from llama_index_ragtune.retrievers import HybridRetriever

    name = "llama_index_ragtune.retrievers.persist_hybrid"
    log = logging.getLogger(name)
    level = log.level
    original_load = HybridRetriever.from_persist_dir
    barrier = threading.Barrier(2, timeout=60)
    lock, order = threading.Lock(), []
    inside, heard, first_done = threading.Event(), threading.Event(), threading.Event()

    def overlapping(*args, **kwargs):
        with lock:
            me = len(order)
            order.append(me)
        barrier.wait()
        if me == 0:
            inside.set()
            heard.wait(60)
        result = original_load(*args, **kwargs)
        if me == 0:
            first_done.set()
        else:
            first_done.wait(60)
        return result

    monkeypatch.setattr(HybridRetriever, "from_persist_dir", overlapping)
    errors = []

    def work():
        try:
            load(original, verify=False, refusal_policy=None)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert inside.wait(60)
    with caplog.at_level(logging.WARNING, logger=name):
        log.warning("a warning from another request")
    heard.set()
    for thread in threads:
        thread.join()
    assert not errors
    assert "a warning from another request" in caplog.text
    assert log.level == level and log.getEffectiveLevel() <= logging.WARNING


ANSWER_CHILD = (
    "import json, sys\n"
    "from tests.pipeline.test_bundle_deploy_hostile import answers, load\n"
    "print('RESULT ' + json.dumps(answers(load(sys.argv[1], verify=False))))\n"
)


@pytest.mark.slow
def test_two_processes_loading_at_once_answer_the_same(original, expected):
    """Two fresh interpreters (not forks: a fork of a process running torch threads can
    hang in the child) load the same folder at the same time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", ANSWER_CHILD, str(original)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert child.returncode == 0 and lines, err[-3000:]
        results.append(json.loads(lines[0][len("RESULT ") :]))
    assert results == [json.loads(json.dumps(expected))] * 2


def test_loads_while_rollback_moves_current_each_get_one_whole_version(bundles):
    """A writer flips CURRENT between v1 and v2 (rollback and set_current_version) while
    loads run: each load is one version, its manifest, folder and settings agreeing."""
    stop = threading.Event()
    flips = []

    def flip():
        while not stop.is_set():
            flips.append(rollback_bundle(bundles, to="v2"))
            flips.append(set_current_version(bundles, "v1").read_text().strip())

    writer = threading.Thread(target=flip)
    writer.start()
    seen = []
    try:
        for _ in range(6):
            bundle = load(bundles, verify=False)
            top_k = {"v1": 10, "v2": 3}[bundle.version]
            assert bundle.path.name == bundle.version
            assert bundle.manifest["retrieval"]["similarity_top_k"] == top_k
            assert bundle.postprocessors[0].top_n == top_k  # the reranker keeps top k
            assert len(bundle.query_engine.query(QUESTIONS[0]).source_nodes) <= top_k
            seen.append(bundle.version)
    finally:
        stop.set()
        writer.join(60)
    assert flips and set(seen) <= {"v1", "v2"}
    assert current_version(bundles) in {"v1", "v2"}


# ------------------------------------------------------------------ unfinished versions


def test_unfinished_version_folders_are_skipped_and_named(bundles, caplog):
    """``v6`` without a manifest (an interrupted copy), ``v7.tmp-*`` of a killed writer."""
    planted = plant_leftovers(bundles)
    before = snapshot(bundles)
    assert load(bundles, verify=False).version == "v1"
    assert bundle_versions(bundles) == ["v1", "v2"]
    assert changes(before, snapshot(bundles)) == NOTHING  # readers clean nothing up
    with pytest.raises(BundleError) as info:
        load(bundles, "v6")
    message = str(info.value)
    assert "v6 (no manifest.json)" in message and "['v1', 'v2']" in message
    assert "rollback" in message
    # CURRENT naming the unfinished folder
    (bundles / "CURRENT").write_text("v6\n")
    with pytest.raises(BundleError, match=r"v6.*\['v1', 'v2'\]"):
        load(bundles)
    with caplog.at_level(logging.WARNING):
        assert rollback_bundle(bundles) == "v2"  # was: "v6 is the oldest version"
    assert "v6" in caplog.text and "not a complete version" in caplog.text
    assert current_version(bundles) == "v2"
    # a writer: the killed writer's folders go, the unfinished v6 keeps its number
    caplog.clear()
    with caplog.at_level(logging.WARNING), bundle_lock(bundles):
        assert next_version(bundles) == "v7"
    assert "v6" in caplog.text
    assert not (bundles / planted[0]).exists() and not (bundles / planted[1]).exists()
    assert (bundles / "v6" / "partial.bin").is_file()


def test_rollback_names_the_unfinished_folders_it_passed_over(bundles, caplog):
    shutil.copytree(bundles / "v2", bundles / "v4")
    manifest = json.loads((bundles / "v4" / "manifest.json").read_text())
    (bundles / "v4" / "manifest.json").write_text(json.dumps({**manifest, "version": "v4"}))
    (bundles / "v3").mkdir()
    set_current_version(bundles, "v4")
    with caplog.at_level(logging.WARNING):
        assert rollback_bundle(bundles) == "v2"
    assert "v3 (no manifest.json)" in caplog.text
    (bundles / "CURRENT").unlink()
    with pytest.raises(BundleError, match="CURRENT not found.*--to"):
        rollback_bundle(bundles)
