"""Distributed RBD over torch.distributed: 2 gloo processes on 127.0.0.1, started by ``launch``.

The worker functions live at module level so that spawned processes can import them.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import rbdlib
from rbdlib.distributed import DistributedRBD, LaunchError, communication, free_port, launch
from rbdlib.distributed.protocol import agree

STEPS, BATCH = 4, 8


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _rbd(model, seed: int = 0, **kwargs) -> rbdlib.RBD:
    # two compartments ("layer"), so coordinates of several bases travel in one message
    return rbdlib.RBD(model.named_parameters(), lr=0.5, dim=6, seed=seed, compartments="layer", **kwargs)


def _batch(step: int, rank: int):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(BATCH, 12, generator=g), torch.randint(0, 3, (BATCH,), generator=g)


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ---------------------------------------------------------------------------------------- workers


def worker_train(rank, world_size):
    out = {}
    for scheme in ("shared", "independent"):
        model = _model()
        opt = DistributedRBD(_rbd(model), scheme=scheme)
        for t in range(STEPS):
            x, y = _batch(t, rank)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        out[scheme] = {"weights": _weights(model), "in_sync": opt.in_sync(), "bytes_total": opt.bytes_total,
                       "bytes_per_step": opt.bytes_per_step, "steps": opt.steps,
                       "cosine": opt.optimizer.last_cosine}
    return out


def _error(fn) -> str | None:
    try:
        fn()
    except (RuntimeError, FloatingPointError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def worker_agreement(rank, world_size):
    out = {"seed": _error(lambda: DistributedRBD(_rbd(_model(), seed=rank), scheme="shared")),
           "weights": _error(lambda: DistributedRBD(_rbd(_model(seed=rank)), scheme="independent"))}
    model = _model(seed=rank)
    DistributedRBD(_rbd(model), sync_weights=True)  # copies rank 0's weights, so the check passes
    out["synced"] = _weights(model)
    for scheme in ("shared", "independent"):
        for policy in ("skip", "raise"):
            model = _model()
            opt = DistributedRBD(_rbd(model, nonfinite=policy), scheme=scheme)
            before = _weights(model)
            x, y = _batch(0, rank)
            loss = F.cross_entropy(model(x), y)
            (loss * float("nan") if rank == 1 else loss).backward()  # only rank 1 sees NaN
            error = _error(opt.step)
            unchanged = all(torch.equal(a, b) for a, b in zip(before, _weights(model), strict=True))
            out[scheme, policy] = {"error": error, "skipped": opt.optimizer.skipped, "steps": opt.steps,
                                   "unchanged": unchanged}
    return out


def _failing_step(opt):
    start = time.monotonic()
    try:
        opt.step()
    except Exception as error:
        return time.monotonic() - start, f"{type(error).__name__}: {error}"
    return time.monotonic() - start, None


def worker_stalls_then_dies(rank, world_size, timeout):
    """Rank 1 stops answering (sleeps) for timeout + 3 s, then dies (os._exit); rank 0 times both failures."""
    short = dist.new_group(timeout=datetime.timedelta(seconds=timeout))
    model = _model()
    stalled = DistributedRBD(_rbd(model), scheme="independent", group=short)
    dying = DistributedRBD(_rbd(model), scheme="shared")  # on the world group (launch's timeout, 60 s)
    for t in range(2):
        x, y = _batch(t, rank)
        F.cross_entropy(model(x), y).backward()
        stalled.step()
        stalled.zero_grad()
    x, y = _batch(2, rank)
    F.cross_entropy(model(x), y).backward()
    if rank == 1:
        time.sleep(timeout + 3)
        os._exit(3)  # dies without a word, mid-training
    return {"stalled": _failing_step(stalled), "dead": _failing_step(dying)}


# ---------------------------------------------------------------------------------------- tests


def _any_error(fn):
    start = time.monotonic()
    try:
        fn()
    except Exception as error:
        return time.monotonic() - start, f"{type(error).__name__}: {error}"
    return time.monotonic() - start, None


def _resume_on_rank_0_only(rank, world_size):
    """rbdlib-experiment under 2 ranks whose run folders differ: only rank 0's holds a checkpoint."""
    import json
    import tempfile
    from pathlib import Path

    from rbdlib import experiments
    from rbdlib.data import load_dataset

    args = experiments.parser().parse_args(["fc-fmnist", "--epochs", "1", "--max-steps", "2", "--no-augment"])
    args.world_size = world_size
    ds = load_dataset("digits")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if rank == 0:
            (folder / "run.json").write_text(json.dumps({"status": "unfinished"}))
            (folder / "checkpoint.pt").write_bytes(b"")
        return _any_error(lambda: experiments.run_one("fc-fmnist", "rbd:dim=4", 0, ds, experiments.PAPER["fc-fmnist"],
                                                      args, folder))


def worker_protocol(rank, world_size):
    """Buffers kept in sync, an error on one rank reaching the other, StepLR, agreement before a resume."""
    out = {}
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = DistributedRBD(_rbd(model), scheme="shared", model=model)
    for t in range(2):  # each rank's batch moves its running statistics differently
        x, y = _batch(t, rank)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    out["buffers"] = [b.clone() for b in model.buffers()]
    out["in_sync"] = opt.in_sync()
    if rank == 1:
        model[1].running_var.mul_(1.5)  # a drift only in a buffer
    out["in_sync_after_drift"] = opt.in_sync()
    for scheme in ("shared", "independent"):
        model = _model()
        opt = DistributedRBD(_rbd(model), scheme=scheme)
        before = _weights(model)
        x, y = _batch(0, rank)
        F.cross_entropy(model(x), y).backward()
        if rank == 1:
            model[0].bias.grad = model[0].bias.grad.to_sparse()  # a local error, only on rank 1
        out["error", scheme] = _any_error(opt.step)
        opt.zero_grad()
        out["closure", scheme] = _any_error(lambda opt=opt: opt.step(lambda: 1 / 0 if rank == 0 else None))
        out["unchanged", scheme] = all(torch.equal(a, b) for a, b in zip(before, _weights(model)))
    model = _model()
    opt = DistributedRBD(_rbd(model), scheme="independent")
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for t in range(4):
        x, y = _batch(t, rank)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        schedule.step()
        lrs.append(opt.optimizer.param_groups[0]["lr"])
    out["lrs"], out["scheduled_in_sync"] = lrs, opt.in_sync()
    out["resume"] = _resume_on_rank_0_only(rank, world_size)
    out["agree"] = _any_error(lambda: agree(["unfinished", True], "resume state"))[1]
    out["disagree"] = _any_error(lambda: agree(["unfinished", rank == 0], "resume state"))[1]
    return out


def worker_all(rank, world_size):
    return {"train": worker_train(rank, world_size), "agreement": worker_agreement(rank, world_size),
            "protocol": worker_protocol(rank, world_size)}


@pytest.fixture(scope="module")
def runs():
    return launch(worker_all, 2, timeout=60)  # one launch: starting processes is the slow part


@pytest.fixture(scope="module")
def trained(runs):
    return [r["train"] for r in runs]


def test_shared_equals_single_process_on_the_concatenated_batch(trained):
    model = _model()
    opt = _rbd(model)
    for t in range(STEPS):
        x, y = zip(*(_batch(t, r) for r in range(2)), strict=True)
        # equal batch sizes: the mean loss over the concatenation has the mean of the two gradients
        F.cross_entropy(model(torch.cat(x)), torch.cat(y)).backward()
        opt.step()
        opt.zero_grad()
    for rank in range(2):
        for got, want in zip(trained[rank]["shared"]["weights"], _weights(model), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_independent_equals_a_simulation_of_two_workers(trained):
    model = _model()
    opt = _rbd(model)
    for t in range(STEPS):
        coords = []
        for w in range(2):
            x, y = _batch(t, w)
            F.cross_entropy(model(x), y).backward()
            coords.append(opt.coordinates(opt.gradient(), worker=w))
            opt.zero_grad()
        for w in range(2):
            opt.apply(coords[w], worker=w, weight=1 / 2)
        opt.steps += 1
    for rank in range(2):
        for got, want in zip(trained[rank]["independent"]["weights"], _weights(model), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", ["shared", "independent"])
def test_ranks_end_bit_identical_and_count_bytes(trained, scheme):
    a, b = trained[0][scheme], trained[1][scheme]
    assert a["in_sync"] and b["in_sync"] and a["steps"] == STEPS
    assert 0 < a["cosine"] <= 1 and 0 < b["cosine"] <= 1
    assert all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"], strict=True))
    coords = 6 + 6  # two compartments of dim 6
    copies = 1 if scheme == "shared" else 2
    assert a["bytes_per_step"] == 4 * (coords + 1 + 4) * copies  # + non-finite flag + 4 has-grad words
    assert a["bytes_total"] == STEPS * a["bytes_per_step"]


@pytest.fixture(scope="module")
def agreement(runs):
    return [r["agreement"] for r in runs]


def test_mismatched_seed_or_weights_fail_fast_naming_the_rank(agreement):
    for rank in range(2):  # every rank raises the same error: none waits on the others
        assert "rank 1 differs from rank 0 in: seed (1 vs 0)" in agreement[rank]["seed"]
        assert "rank 1 differs from rank 0 in: weights or buffers" in agreement[rank]["weights"]
    assert all(torch.equal(x, y) for x, y in zip(agreement[0]["synced"], agreement[1]["synced"], strict=True))


@pytest.mark.parametrize("scheme", ["shared", "independent"])
def test_a_nonfinite_gradient_on_one_rank_stops_every_rank(agreement, scheme):
    for rank in range(2):
        skip, stop = agreement[rank][scheme, "skip"], agreement[rank][scheme, "raise"]
        assert skip == {"error": None, "skipped": 1, "steps": 0, "unchanged": True}
        assert stop["unchanged"] and stop["steps"] == 0
        assert stop["error"].startswith("FloatingPointError: rank(s) [1] have a gradient holding NaN")


def test_a_stalled_or_dead_worker_is_an_error_not_a_hang():
    timeout = 5
    with pytest.raises(LaunchError) as info:
        launch(worker_stalls_then_dies, 2, timeout, timeout=60, join_timeout=120)
    assert "exited with code 3" in info.value.failures[1]
    waited, error = info.value.results[0]["stalled"]  # rank 0 got on with its other work
    assert error is not None and timeout - 1 <= waited <= timeout + 5, (waited, error)
    waited, error = info.value.results[0]["dead"]  # the peer's exit is noticed, long before 60 s
    assert error is not None and waited <= timeout + 5, (waited, error)
    print(f"stalled peer: error after {info.value.results[0]['stalled'][0]:.1f} s (timeout {timeout} s); "
          f"dead peer: error after {waited:.1f} s: {error.splitlines()[0][:120]}")


# ------------------------------------------------------------------------------ issue 29: failures that end cleanly
def _ranks(*environments) -> list[tuple[int, str]]:
    """``init(timeout=2)`` in one process per environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT set by hand, as
    without torchrun): each one's exit code and the last line it wrote to stderr."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}
    procs = [subprocess.Popen([sys.executable, "-c", "import rbdlib.distributed as d; d.init(timeout=2)"],
                              env={**base, **env}, stderr=subprocess.PIPE, text=True) for env in environments]
    out = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        out.append((p.returncode, err.strip().splitlines()[-1]))
    return out


def test_a_master_port_held_by_another_program_is_named_by_every_rank():
    """Rank 1 used to wait for ever on the other program (torch's store client ignores its timeout there)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(other.getsockname()[1]), WORLD_SIZE="2")
        (rc0, err0), (rc1, err1) = _ranks(dict(env, RANK="0"), dict(env, RANK="1"))
    assert rc0 == 1 and err0.startswith("RuntimeError: rank 0 cannot serve the process group on 127.0.0.1:")
    assert "the port is in use by another program" in err0
    assert rc1 == 1 and err1.startswith("RuntimeError: rank 1 reached 127.0.0.1:")
    assert "another program holds the port (MASTER_PORT)" in err1


def test_a_world_size_mismatch_is_named_by_every_rank():
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    (rc0, err0), (rc1, err1) = _ranks(dict(env, RANK="0", WORLD_SIZE="2"), dict(env, RANK="1", WORLD_SIZE="3"))
    assert rc0 == 1 and err0 == ("RuntimeError: WORLD_SIZE mismatch: rank 1 was started with WORLD_SIZE=3, this "
                                 "rank (0) with WORLD_SIZE=2; start every rank with the same world size")
    assert rc1 == 1 and err1 == ("RuntimeError: WORLD_SIZE mismatch: rank 0 was started with WORLD_SIZE=2, this "
                                 "rank (1) with WORLD_SIZE=3; start every rank with the same world size")


def worker_fails_or_hangs(rank, world_size):
    """Rank 0 fails at once; rank 1 hangs outside any collective (no timeout can end it)."""
    if rank == 0:
        raise ValueError("rank 0 gives up")
    time.sleep(3600)


def test_launch_ends_the_ranks_still_running_after_one_failed():
    """Not at join_timeout (10 minutes here): ``timeout`` + 5 s after the failure."""
    with pytest.raises(LaunchError) as info:
        launch(worker_fails_or_hangs, 2, timeout=1, join_timeout=600)
    assert "ValueError: rank 0 gives up" in info.value.failures[0]
    assert info.value.failures[1] == "still running 6 s after rank(s) [0] failed; terminated"


def test_bytes_per_step_fc_network_against_ddp():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = rbdlib.RBD(model.parameters(), lr=0.5, dim=250)
    assert opt.size == 101_770
    for scheme, world_size, coord_bytes in [("shared", 2, 1000), ("independent", 2, 2000),
                                            ("independent", 8, 8000)]:
        c = communication(opt, world_size, scheme)
        assert c["coord_bytes_per_step"] == coord_bytes and c["ddp_bytes_per_step"] == 407_080
        print(f"FC D=101,770 d=250 {scheme} W={world_size}: {c['bytes_per_step']:,} B/step "
              f"({c['coord_bytes_per_step']:,} B coordinates) vs DDP {c['ddp_bytes_per_step']:,} B/step")


def test_clear_errors_without_a_process_group():
    opt = _rbd(_model())
    with pytest.raises(ValueError, match="scheme must be one of"):
        communication(opt, 2, "ring")
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="not initialized"):
            DistributedRBD(opt)


@pytest.mark.parametrize("scheme", ["shared", "independent"])
def test_one_process_is_plain_rbd(scheme, tmp_path):
    """World size 1, in this process: the same weights bit for bit, and the same cosine diagnostic."""
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model, reference = _model(), _model()
        opt, plain = DistributedRBD(_rbd(model), scheme=scheme), _rbd(reference)
        for t in range(2):
            for m, o in ((model, opt), (reference, plain)):
                F.cross_entropy(m(_batch(t, 0)[0]), _batch(t, 0)[1]).backward()
                o.step()
                o.zero_grad()
        assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(reference), strict=True))
        assert opt.optimizer.last_cosine == pytest.approx(plain.last_cosine, rel=1e-3)
        assert opt.bytes_total == 2 * 4 * (12 + 1 + 4)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------ issue 13: the protocol
@pytest.fixture(scope="module")
def protocol(runs):
    return [r["protocol"] for r in runs]


def test_buffers_are_broadcast_from_rank_0_and_fingerprinted(protocol):
    a, b = protocol
    assert all(torch.equal(x, y) for x, y in zip(a["buffers"], b["buffers"]))
    assert not torch.equal(a["buffers"][0], torch.zeros(8))  # the running mean did move
    assert a["in_sync"] and b["in_sync"]
    assert not a["in_sync_after_drift"] and not b["in_sync_after_drift"]


@pytest.mark.parametrize("scheme", ["shared", "independent"])
def test_an_error_on_one_rank_reaches_the_other_at_once(protocol, scheme):
    (t0, e0), (t1, e1) = protocol[0]["error", scheme], protocol[1]["error", scheme]
    assert e1.startswith("TypeError: RBD does not support sparse")
    assert e0 == "RuntimeError: rank(s) [1] failed in this step (their own error says why); no parameter was " \
                 "changed on any rank"
    assert t0 < 10 and t1 < 10  # not the 60 s timeout
    (_, c0), (_, c1) = protocol[0]["closure", scheme], protocol[1]["closure", scheme]
    assert c0.startswith("ZeroDivisionError") and c1.startswith("RuntimeError: rank(s) [0] failed")
    assert protocol[0]["unchanged", scheme] and protocol[1]["unchanged", scheme]


def test_lr_schedulers_drive_distributed_rbd(protocol):
    for p in protocol:
        assert p["lrs"] == [0.5, 0.25, 0.25, 0.125] and p["scheduled_in_sync"]


def test_ranks_agree_before_a_resume(protocol):
    assert protocol[0]["agree"] is None and protocol[1]["agree"] is None
    for p in protocol:
        assert p["disagree"].startswith("RuntimeError: ranks disagree on the resume state: rank(s) [1] differ")


def test_a_resume_checkpoint_on_rank_0_only_stops_every_rank_before_any_collective(protocol):
    for p in protocol:
        seconds, error = p["resume"]
        assert error.startswith("RuntimeError: ranks disagree on the resume state of") and seconds < 30, error
