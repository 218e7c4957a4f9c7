"""The background compile strategy: a run that switches its pieces to compiled
forms mid-way computes what an eager run does (to the compiled-equals-eager
tolerance), a run told the switch points reproduces a recorded run bit for
bit, a resume across a switch continues exactly, and the compile cache loads
only what it may: keyed by what shapes the graph, refusing stale, foreign and
corrupt entries, in memory where it cannot write.
"""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
from trees import assert_trees_close, assert_trees_equal

from rlstack import Algorithm
from rlstack.envs import CartPole
from rlstack.integrations import compile_cache
from rlstack.learn import transforms
from rlstack.shell import build
from rlstack.shell.compile_strategy import CheckedPiece, CompileStrategy

SMALL = dict(num_envs=16, horizon=8, sgd_minibatch_size=64, model_config={"hiddens": (8,)})


class Scale:
    """What a piece closes over: data the saved function takes from the live run."""

    def __init__(self, factor: float) -> None:
        self.factor = factor


def _piece(scale: Scale):
    def piece(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x * scale.factor) + 1.0

    return piece


def _description(**changes):
    return {"piece": "test/piece", "config": {"width": 4}, **compile_cache.versions(), **changes}


@pytest.fixture
def cache(tmp_path):
    return compile_cache.CompileCache(tmp_path / "cache")


def _compile_and_save(cache, description, fn, x):
    compiled = compile_cache.aot_compile(fn, (x,), transforms.INDUCTOR_OPTIONS)
    assert cache.save(description, compile_cache.to_bytes(compiled, fn))
    return compiled


def test_a_saved_piece_loads_with_the_live_runs_data_and_computes_what_the_piece_does(cache):
    x = torch.randn(4)
    scale = Scale(2.0)
    fn = _piece(scale)
    _compile_and_save(cache, _description(), fn, x)
    loaded = cache.load(_description(), fn)
    assert loaded is not None and compile_cache.guards_accept(loaded, (x,))
    with compile_cache.intra_op_threads(compile_cache.TRACE_THREADS):  # its guards hold that count
        torch.testing.assert_close(loaded(x), fn(x))
    scale.factor = 3.0  # the closure is the live object, not a copy stored on disk
    assert not compile_cache.guards_accept(
        loaded, (x,)
    )  # the graph baked 2.0 in: its guards say so


def test_the_key_changes_with_the_config_the_versions_and_the_inputs_layout():
    key = compile_cache.entry_key(_description())
    assert key == compile_cache.entry_key(_description())
    assert key != compile_cache.entry_key(_description(config={"width": 8}))
    assert key != compile_cache.entry_key(_description(rlstack="0.0.0-other"))
    a, b = torch.zeros(4, 2), torch.zeros(2, 4).t()  # same shape, other strides
    assert compile_cache.signature((a,)) != compile_cache.signature((b,))
    assert compile_cache.signature((a, 1)) != compile_cache.signature((a, 2))


def test_stale_foreign_and_corrupt_entries_are_refused_and_rebuilt(cache, monkeypatch):
    x = torch.randn(4)
    fn = _piece(Scale(2.0))
    description = _description()
    _compile_and_save(cache, description, fn, x)
    # A changed version string is another key: nothing is found, nothing wrong is loaded.
    monkeypatch.setattr(compile_cache, "__version__", "999.0")
    assert cache.load(_description(**compile_cache.versions()), fn) is None
    monkeypatch.undo()
    folder = cache.entry(compile_cache.entry_key(description))
    # A foreign entry: its meta.json describes another piece.
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "description": _description(piece="x")}))
    assert cache.load(description, fn) is None
    assert "description differs" in cache.rejected[compile_cache.entry_key(description)]
    # A truncated file.
    _compile_and_save(cache, description, fn, x)
    data = (folder / "function.bin").read_bytes()
    (folder / "function.bin").write_bytes(data[: len(data) // 2])
    assert cache.load(description, fn) is None
    assert "truncated or corrupt" in cache.rejected[compile_cache.entry_key(description)]
    # Rebuilt: compiled and saved again, it loads.
    _compile_and_save(cache, description, fn, x)
    with compile_cache.intra_op_threads(compile_cache.TRACE_THREADS):
        torch.testing.assert_close(cache.load(description, fn)(x), fn(x))


def test_a_changed_source_makes_an_entry_stale(cache, tmp_path, monkeypatch):
    module = tmp_path / "user_env.py"
    module.write_text("def piece(x):\n    return x * 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_env

    x = torch.randn(3)
    _compile_and_save(cache, _description(), user_env.piece, x)
    assert cache.load(_description(), user_env.piece) is not None
    module.write_text("def piece(x):\n    return x * 3.0\n")  # the user edits the env
    assert cache.load(_description(), user_env.piece) is None
    assert "source it inlined has changed" in next(iter(cache.rejected.values()))


def test_a_cache_folder_that_cannot_be_written_means_memory_and_one_notice(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    cache = compile_cache.CompileCache(folder)
    assert not cache.writable and "cannot be written" in capsys.readouterr().err
    fn = _piece(Scale(2.0))
    compiled = compile_cache.aot_compile(fn, (torch.randn(4),), transforms.INDUCTOR_OPTIONS)
    assert not cache.save(_description(), compile_cache.to_bytes(compiled, fn))


def test_a_cache_folder_whose_writes_fail_means_memory_and_one_notice(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = compile_cache.CompileCache(blocker / "cache")  # its parent is a file: no mkdir
    assert not cache.writable
    assert capsys.readouterr().err.count("cannot be written") == 1


def test_missing_apis_fall_back_to_compiling_first_saying_so_once(monkeypatch, capsys):
    monkeypatch.setattr(
        compile_cache, "missing_api", lambda: "torch.compiler.load_compiled_function"
    )
    monkeypatch.setattr(compile_cache, "_NOTICES", set())
    assert build.compile_mode(None, cuda_graphs=False) == "compiled"
    assert build.compile_mode(None, cuda_graphs=False) == "compiled"
    err = capsys.readouterr().err
    assert err.count("lacks torch.compiler.load_compiled_function") == 1
    assert build.compile_mode(False, cuda_graphs=False) == "eager"
    assert build.compile_mode(True, cuda_graphs=False) == "compiled"


def test_this_torch_has_the_apis_and_asking_imports_no_compiler():
    assert compile_cache.missing_api() is None  # torch 2.13: the default mode is the background one


NO_DYNAMO = """
import sys
from rlstack import Algorithm
from rlstack.envs import CartPole
for compile in (None, False):
    algo = Algorithm(CartPole, num_envs=8, horizon=4, compile=compile)
    algo.collect()
print(sorted(m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules))
"""


def test_building_and_a_first_eager_collect_import_no_compiler(tmp_path):
    # Importing Dynamo and Inductor costs seconds: a run's first iteration must not wait for it.
    result = subprocess.run(
        [sys.executable, "-c", NO_DYNAMO],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "RLSTACK_COMPILE_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_switched_piece_checks_layouts_and_runs_eagerly_for_others(capsys, monkeypatch):
    x = torch.randn(4, 2)
    fn = _piece(Scale(2.0))
    compiled = compile_cache.aot_compile(fn, (x,), transforms.INDUCTOR_OPTIONS)
    calls = []
    piece = CheckedPiece("test/piece", compiled, lambda y: calls.append(y) or fn(y), [])
    piece.signature = compile_cache.signature((x,))
    monkeypatch.setattr(compile_cache, "_NOTICES", set())
    torch.testing.assert_close(piece(x), fn(x))
    assert not calls
    transposed = torch.randn(2, 4).t()
    torch.testing.assert_close(piece(transposed), fn(transposed))
    assert len(calls) == 1 and "runs eagerly" in capsys.readouterr().err
    with transforms.same_inputs_as_before(True):  # a loop's later call: the loop's contract
        assert transforms.inputs_as_before()
    assert not transforms.inputs_as_before()


def test_bad_switch_points_are_refused_by_name():
    with pytest.raises(TypeError, match="`compile_switches` must be a dict of piece name"):
        Algorithm(CartPole, compile_switches={"rollout/step": "soon"}, **SMALL)


def _train(steps, tmp_path, **kwargs):
    algo = Algorithm(CartPole, seed=3, compile_cache=tmp_path / "cache", **SMALL, **kwargs)
    for _ in range(steps):
        algo.collect()
        algo.step()
    return algo


def _train_until_switched(tmp_path, seconds=600):
    """A free run, stepped until every piece it compiles has switched."""
    algo = _train(2, tmp_path)
    for job in algo.functions.strategy.jobs.values():
        job.done.wait(timeout=seconds)
    algo.collect()
    algo.step()
    return algo


SWITCHES = {
    "rollout/step": 2,
    "rollout/bootstrap_value": 3,
    "update/prepare": 2,
    "update/sgd_step": 3,
}


@pytest.mark.slow
def test_a_run_that_switches_mid_way_equals_an_eager_run_and_replays_bit_for_bit(tmp_path):
    eager = _train(5, tmp_path, compile=False)
    switched = _train(5, tmp_path, compile_switches=SWITCHES)
    assert switched.compile_switches == SWITCHES
    assert torch.equal(switched.key, eager.key)  # the random streams are data: the same
    assert_trees_close(switched.params, eager.params, rtol=1e-4, atol=1e-5)
    replayed = _train(5, tmp_path, compile_switches=SWITCHES)  # loaded from the cache now
    assert replayed.compile_switches == SWITCHES
    assert_trees_equal(replayed.params, switched.params)
    assert_trees_equal(replayed.opt_state, switched.opt_state)


@pytest.mark.slow
def test_a_resume_across_a_switch_continues_with_the_recorded_switch_points(tmp_path):
    whole = _train(5, tmp_path, compile_switches=SWITCHES)
    first = _train(1, tmp_path, compile_switches=SWITCHES)
    path = first.save_checkpoint(tmp_path / "step-1.pt")
    resumed = Algorithm.from_checkpoint(path)
    assert resumed.compile == "background"
    for _ in range(4):
        resumed.collect()
        resumed.step()
    assert resumed.compile_switches == SWITCHES
    assert_trees_equal(resumed.params, whole.params)
    # Resumed after every switch point: compiled from its first call, as the recorded run was.
    after = Algorithm.from_checkpoint(
        _train(4, tmp_path, compile_switches=SWITCHES).save_checkpoint(tmp_path / "step-4.pt")
    )
    after.collect()
    after.step()
    assert after.compile_switches == SWITCHES  # the record stays the recorded run's
    assert_trees_equal(after.params, whole.params)
    assert_trees_equal(after.opt_state, whole.opt_state)
    # A free run's record is followed on resume: the resumed run switches where it did.
    free = _train_until_switched(tmp_path)
    record = free.compile_switches
    assert record and set(record) <= {*SWITCHES, "update/grads", "update/optimizer_step"}
    later = Algorithm.from_checkpoint(free.save_checkpoint(tmp_path / "free.pt"))
    assert later.functions.strategy.given == record


@pytest.mark.slow
def test_pieces_switch_in_at_any_intra_op_thread_count(tmp_path):
    # The child traces on one thread; Dynamo's guards hold that count, not the training's.
    with compile_cache.intra_op_threads(3):
        algo = _train_until_switched(tmp_path)
        assert torch.get_num_threads() == 3  # every piece switched: the training's own again
    assert algo.compile_switches and all(steps >= 1 for steps in algo.compile_switches.values())
    assert set(algo.compile_switches) == set(algo.functions.strategy.jobs)


def test_the_thread_count_follows_the_switch_points_alone(tmp_path):
    # One fewer while a piece is still to switch at a given point, so a replay, or a run
    # resumed anywhere, runs at the recorded run's counts.
    strategy = CompileStrategy(
        lambda name, args: {},
        folder=str(tmp_path),
        switches={"rollout/step": 2, "update/sgd_step": 3},
        free=False,
    )
    schedule = [
        strategy._still_compiling(kind, steps)
        for steps in range(5)
        for kind in ("rollout", "update")
    ]
    assert schedule == [False, False, True, True, True, True, True, False, False, False]


WARM = textwrap.dedent(
    """
    import json, sys, torch
    import torch._inductor.compile_fx as compile_fx
    from rlstack import Algorithm
    from rlstack.envs import CartPole
    from rlstack.integrations import compile_cache

    def refuse(*args, **kwargs):
        raise AssertionError("compiled in a warm process")

    compile_cache.aot_compile = refuse  # no Dynamo tracing
    compile_fx.compile_fx = refuse  # no Inductor code generation
    algo = Algorithm(CartPole, seed=3, compile_cache=sys.argv[1], num_envs=16, horizon=8,
                     sgd_minibatch_size=64, model_config={"hiddens": (8,)})
    algo.collect()
    algo.step()  # every piece called once
    algo.collect()
    algo.step()  # from the first iteration's end, each is looked up in the cache
    jobs = algo.functions.strategy.jobs
    for job in jobs.values():
        job.done.wait(timeout=600)
    algo.collect()
    algo.step()
    print(json.dumps([sorted(algo.compile_switches), sorted({job.how for job in jobs.values()})]))
    """
)


@pytest.mark.slow
def test_a_later_run_of_the_same_configuration_loads_every_piece_without_compiling(tmp_path):
    cold = _train_until_switched(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", WARM, str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    names, hows = json.loads(result.stdout.strip().splitlines()[-1])
    assert names == sorted(cold.functions.strategy.jobs) and hows == ["loaded"]


def test_a_compiling_child_uses_no_pool_its_parent_started_and_generates_for_its_threads():
    script = textwrap.dedent(
        """
        import os, torch
        import torch._inductor.async_compile as async_compile
        import torch._inductor.config as config
        from rlstack.shell import compile_worker

        torch.set_num_threads(2)
        async_compile.AsyncCompile.pool()  # its threads are not copied by a fork
        read, write = os.pipe()
        if os.fork() == 0:
            compile_worker._compile_alone(threads=7)
            fresh = async_compile.AsyncCompile.pool.cache_info().currsize == 0
            facts = [config.compile_threads, config.cpp.threads, torch.get_num_threads(), fresh]
            os.write(write, repr(facts).encode())
            os._exit(0)
        os.close(write)
        print(os.read(read, 200).decode())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1, 7, 1, True]"
