"""The engine's side thread: order, inference mode, errors, and the inline form."""

from __future__ import annotations

import threading

import pytest
import torch

from rgbd_seg_ros.inference.side_thread import SideTasks


def test_threaded_tasks_run_in_order_on_one_other_thread_in_inference_mode():
    side = SideTasks(threaded=True)
    seen = []

    def task(i):
        seen.append((i, threading.get_ident(), torch.is_inference_mode_enabled()))
        return i * 10

    tasks = [side.submit(task, i) for i in range(5)]
    assert [t.result() for t in tasks] == [0, 10, 20, 30, 40]
    assert [i for i, _, _ in seen] == list(range(5))
    threads = {ident for _, ident, _ in seen}
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert all(mode for _, _, mode in seen)
    side.close()


def test_an_inference_tensor_can_be_updated_in_place_on_the_side_thread():
    with torch.inference_mode():
        made = torch.zeros(4)
    side = SideTasks(threaded=True)
    side.submit(made.add_, 1).result()
    assert made.tolist() == [1.0] * 4
    side.close()


def test_a_task_error_is_raised_by_result_and_swallowed_by_settle():
    side = SideTasks(threaded=True)
    task = side.submit(lambda: 1 / 0)
    task.settle()
    with pytest.raises(ZeroDivisionError):
        task.result()
    assert side.submit(lambda: 'after').result() == 'after'
    side.close()


def test_settle_waits_for_a_running_task():
    side = SideTasks(threaded=True)
    started, release, finished = threading.Event(), threading.Event(), []

    def slow():
        started.set()
        release.wait(timeout=30)
        finished.append(True)

    task = side.submit(slow)
    assert started.wait(timeout=30)
    threading.Timer(0.2, release.set).start()
    task.settle()
    assert finished == [True]
    side.close()


def test_inline_tasks_run_once_when_asked_and_never_when_settled():
    side = SideTasks(threaded=False)
    calls = []
    task = side.submit(lambda: calls.append('ran') or len(calls))
    assert calls == []  # not run until its result is wanted
    assert task.result() == 1 and task.result() == 1
    assert calls == ['ran']
    dropped = side.submit(lambda: calls.append('dropped'))
    dropped.settle()
    assert calls == ['ran']
    side.close()


def test_a_forked_child_gets_a_side_thread_of_its_own():
    """The pool's thread does not survive a fork; a child that uses the engine must not wait
    for ever on it."""
    import multiprocessing

    side = SideTasks(threaded=True)
    assert side.submit(lambda: 'parent').result() == 'parent'
    context = multiprocessing.get_context('fork')
    queue = context.Queue()
    child = context.Process(target=_use_side_tasks, args=(side, queue))
    child.start()
    try:
        assert queue.get(timeout=60) == 'child'
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0
    side.close()


def _use_side_tasks(side, queue):
    queue.put(side.submit(lambda: 'child').result())
