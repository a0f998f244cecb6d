"""Dynamic micro-batching: questions from concurrent requests answered in shared model calls.

Every question goes into one asyncio queue, and a single worker task takes up to
``max_batch`` questions (or whatever arrived within ``max_wait_ms`` of the first one), runs
them through ``QuestionAnswerer.decode_examples`` in a worker thread so the event loop keeps
accepting requests, and hands each caller its own decoding.

A backend that is not batch-invariant (``Backend.batch_invariant``: dynamically quantized
int8 graphs) runs one window per call whatever the batch, so sharing calls saves nothing
and only makes questions wait for each other (the bundled int8 model on 2 cores: 72 req/s
batched vs 98 req/s unbatched at 200 clients). Its requests skip the queue: each goes
straight to the model thread, alone.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

from pocketqa.data.squad import Example
from pocketqa.errors import ConfigError
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.spans import Decoded


class MicroBatcher:
    """Collects questions from concurrent requests into shared model calls.

    One worker task per event loop takes the first waiting question and everything queued
    behind it (up to ``max_batch``), and runs the batch in a single-thread executor (the
    model is never called from two threads at once). Under concurrent load (the previous
    batch held more than one question) it also waits up to ``max_wait_ms`` for stragglers;
    a lone client never waits: its batches of one go straight to the model.

    With a backend that is not batch-invariant nothing is batched: each request's questions
    go to the model thread as they come, with no wait (``batches`` is False).

    Attributes:
        model_calls: How many batches went to the model (tests compare it with requests).
        questions: How many questions were answered.
        largest_batch: The largest batch seen so far.
        pending: Questions submitted and not answered yet (queued or in the model).
        batches: Whether questions of different requests share model calls.
    """

    def __init__(self, qa: QuestionAnswerer, max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 4096):
        problems = []
        if max_batch < 1:
            problems.append(f"max_batch must be >= 1, found {max_batch}")
        # nan or inf would make the worker wait forever for stragglers (or die): requests hang.
        if not math.isfinite(max_wait_ms) or max_wait_ms < 0:
            problems.append(f"max_wait_ms must be a finite number >= 0, found {max_wait_ms}")
        if problems:
            raise ConfigError("; ".join(problems))
        self.qa = qa
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.model_calls = 0
        self.questions = 0
        self.largest_batch = 0
        self.pending = 0
        self.batches = getattr(qa.backend, "batch_invariant", True)  # optional for backends users write
        self._last_batch = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocketqa-model")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ensure_worker(self) -> asyncio.Queue:
        # Started lazily on the running loop: test clients may run each request on a new loop.
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._work(self._queue), name="pocketqa-batcher")
        return self._queue

    async def submit(self, examples: list[Example]) -> list[Decoded]:
        """Queues questions and waits for their decodings (in the same order).

        Raises:
            BusyError: When the queue already holds ``max_queue`` questions.
        """
        if not self.batches:
            return await self._answer_alone(examples)
        queue = self._ensure_worker()
        if queue.qsize() + len(examples) > self.max_queue:
            raise BusyError(f"{queue.qsize()} questions are waiting for the model; retry shortly")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in examples]
        for example, future in zip(examples, futures):
            queue.put_nowait((example, future))
        self.pending += len(examples)
        try:
            return list(await asyncio.gather(*futures))
        finally:
            self.pending -= len(examples)

    async def _answer_alone(self, examples: list[Example]) -> list[Decoded]:
        """One request's questions in one model call of their own, queued only behind the calls before it.

        A caller that goes away cancels its call if it has not started.
        """
        if self.pending + len(examples) > self.max_queue:
            raise BusyError(f"{self.pending} questions are waiting for the model; retry shortly")
        loop = asyncio.get_running_loop()
        self.pending += len(examples)
        try:
            decoded = await loop.run_in_executor(self._executor, self.qa.decode_examples, examples)
        finally:
            self.pending -= len(examples)
        self._count(len(examples))
        return decoded

    def _count(self, batch: int) -> None:
        self.model_calls += 1
        self.questions += batch
        self.largest_batch = max(self.largest_batch, batch)
        self._last_batch = batch

    async def _collect(self, queue: asyncio.Queue) -> list[tuple[Example, asyncio.Future]]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        # Waiting only pays when other callers are about to send: a lone client would
        # just add max_wait to every answer.
        deadline = loop.time() + (self.max_wait if self._last_batch > 1 else 0.0)
        while len(batch) < self.max_batch:
            try:  # whatever is already queued joins without waiting
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        # A caller that went away (client disconnected) cancels its future: skip its question.
        return [(ex, fut) for ex, fut in batch if not fut.done()]

    async def _work(self, queue: asyncio.Queue) -> None:
        batch: list[tuple[Example, asyncio.Future]] = []
        try:
            while True:
                batch = await self._collect(queue)
                if not batch:
                    continue
                try:
                    await self._answer(batch)
                except Exception as e:  # any model failure goes to the callers, never kills the worker
                    if len(batch) == 1:
                        _fail(batch, e)
                        continue
                    # A question the model fails on must not fail the questions batched with
                    # it (other clients): answer each alone, so only its own caller gets the error.
                    for item in batch:
                        try:
                            await self._answer([item])
                        except Exception as e:
                            _fail([item], e)
        finally:
            # Cancelled (stop) or dying: nobody may wait forever, in the model or in the queue.
            _fail(batch, BusyError("the server is shutting down"))
            while not queue.empty():
                _fail([queue.get_nowait()], BusyError("the server is shutting down"))

    async def _answer(self, batch: list[tuple[Example, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        examples = [ex for ex, _ in batch]
        decoded = await loop.run_in_executor(self._executor, self.qa.decode_examples, examples)
        self._count(len(batch))
        for (_, fut), d in zip(batch, decoded):
            if not fut.done():
                fut.set_result(d)

    async def stop(self) -> None:
        """Cancels the worker of the current loop; questions in flight or queued get an error."""
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None

    def stats(self) -> dict:
        return {
            "model_calls": self.model_calls,
            "questions": self.questions,
            "largest_batch": self.largest_batch,
            "pending": self.pending,
        }


def _fail(batch: list[tuple[Example, asyncio.Future]], error: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(error)


class BusyError(RuntimeError):
    """The server cannot take more questions right now (HTTP 503)."""


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def unless_disconnected(request, awaitable):
    """Awaits ``awaitable``, cancelling it when the client disconnects first.

    A client that timed out must not cost model time: cancelling ``MicroBatcher.submit``
    cancels its futures, and the worker skips cancelled questions.

    Raises:
        ClientGone: The client went away first.
    """
    task = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        # The body is already read, so the next ASGI message is the disconnect (servers and
        # test clients send it only once the client is gone or the response is complete).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the request handler itself was cancelled
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientGone
