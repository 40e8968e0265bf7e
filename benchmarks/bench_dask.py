"""`fastconv.dask` on a LocalCluster of 2 worker processes x 1 thread, used as on a
cluster: the input is persisted on the workers in `setup`, each call persists its
result there and waits (nothing comes back). `convolve2d` against
`dask_image.ndfilters.convolve` on the same cluster, input and chunks and against
in-memory `fastconv.convolve2d` at 2 threads; the same on dask's threaded scheduler
(`DaskConvolve2dThreads`, one machine as dask runs there by default); `predict` of the
digits model against its in-memory forward in the same batches.

The sizes are a quarter of `python -m fastconv bench --sections dask` (an 8192x8192
image): small enough for a smoke run, large enough that a chunk's work (about 5 ms on
one core) is well above a task's overhead. Commits without `fastconv.dask`, and
environments without dask, skip these; the dask-image figures need ``pip install
dask-image``.
"""
import numpy as np

import fastconv

from .common import SkipNotImplemented, interleaved_medians, skip

IMAGE, KERNEL, CHUNK = 4096, 5, 1024          # convolve2d: image side, kernel side, chunk side
IMAGES, BATCH = 50_000, 5_000                 # predict: digits (1x8x8) and images per task
WORKERS, THREADS_PER_WORKER = 2, 1


class _Timed:
    """asv's settings for these second-long calls, and `self.impls` (zero-argument
    callables, "fastconv" first, as in common._OpBenchmark) timed against each other."""

    timeout = 300
    rounds = 1
    repeat = (1, 5, 20.0)
    number = 1
    speedup_repeats = 5

    def _impl(self, name):
        fn = self.impls.get(name)
        if fn is None:
            raise SkipNotImplemented(f"{name} is not installed")
        return fn

    def _ratio(self, other):
        t = interleaved_medians({"fastconv": self.impls["fastconv"], other: self._impl(other)},
                                self.speedup_repeats)
        return t[other] / t["fastconv"]


class _OnCluster(_Timed):
    """A LocalCluster started in `setup` and closed in `teardown`."""

    def setup(self):
        try:
            import dask.array  # noqa: F401
            import distributed

            import fastconv.dask  # noqa: F401
        except ImportError:
            skip("needs fastconv.dask and dask installed")
        self.cluster = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=THREADS_PER_WORKER,
                                                processes=True, dashboard_address=None)
        self.client = distributed.Client(self.cluster)
        self._saved_threads = fastconv.get_num_threads()
        fastconv.set_num_threads(WORKERS * THREADS_PER_WORKER)   # the in-memory op: the cluster's cores
        self.impls = {}
        try:
            self.prepare()
        except NotImplementedError:
            self.teardown()
            raise

    def teardown(self):
        fastconv.set_num_threads(self._saved_threads)
        self.client.close()
        self.cluster.close()

    def on_cluster(self, make):
        import distributed

        def call():
            distributed.wait(self.client.persist(make()))
        return call


class DaskConvolve2d(_OnCluster):
    """`convolve2d(image, kernel, "same")` of a IMAGE x IMAGE float32 image in CHUNK x
    CHUNK chunks."""

    def prepare(self):
        import dask.array as da

        import fastconv.dask as fd

        image = self.client.persist(da.random.default_rng(0).standard_normal(
            (IMAGE, IMAGE), dtype=np.float32, chunks=CHUNK))
        kernel = np.random.default_rng(1).standard_normal((KERNEL, KERNEL)).astype(np.float32)
        local = image.compute()
        self.impls["fastconv"] = self.on_cluster(lambda: fd.convolve2d(image, kernel, "same"))
        self.impls["in-memory"] = lambda: fastconv.convolve2d(local, kernel, "same")
        try:
            from dask_image import ndfilters
        except ImportError:
            return
        self.impls["dask-image"] = self.on_cluster(
            lambda: ndfilters.convolve(image, kernel, mode="constant", cval=0.0))

    def time_fastconv(self):
        self.impls["fastconv"]()

    def time_dask_image(self):
        self._impl("dask-image")()

    def time_in_memory(self):
        self.impls["in-memory"]()

    def track_speedup_dask_image(self):
        return self._ratio("dask-image")

    track_speedup_dask_image.unit = "x (dask-image time / fastconv.dask time; target >= 5)"

    def track_ratio_in_memory(self):
        return 1 / self._ratio("in-memory")

    track_ratio_in_memory.unit = "x (fastconv.dask time / in-memory time; target <= 1.3)"


class DaskConvolve2dThreads(_Timed):
    """`convolve2d` as in `DaskConvolve2d`, on one machine as dask runs there by default:
    the image's chunks in this process (made by dask), dask's threaded scheduler with
    WORKERS * THREADS_PER_WORKER threads, each call keeping its result's chunks
    (``persist``); dask-image the same; in-memory `fastconv.convolve2d` at as many threads."""

    def setup(self):
        try:
            import dask.array as da

            import fastconv.dask as fd
        except ImportError:
            skip("needs fastconv.dask and dask installed")
        threads = WORKERS * THREADS_PER_WORKER
        self._saved_threads = fastconv.get_num_threads()
        fastconv.set_num_threads(threads)      # the in-memory op, and the tasks' share of it
        run = dict(scheduler="threads", num_workers=threads)
        image = da.random.default_rng(0).standard_normal((IMAGE, IMAGE), dtype=np.float32,
                                                         chunks=CHUNK).persist(**run)
        kernel = np.random.default_rng(1).standard_normal((KERNEL, KERNEL)).astype(np.float32)
        local = image.compute(**run)
        self.impls = {"fastconv": lambda: fd.convolve2d(image, kernel, "same").persist(**run),
                      "in-memory": lambda: fastconv.convolve2d(local, kernel, "same")}
        try:
            from dask_image import ndfilters
        except ImportError:
            return
        self.impls["dask-image"] = lambda: ndfilters.convolve(image, kernel, mode="constant",
                                                              cval=0.0).persist(**run)

    def teardown(self):
        fastconv.set_num_threads(self._saved_threads)

    time_fastconv = DaskConvolve2d.time_fastconv
    time_dask_image = DaskConvolve2d.time_dask_image
    time_in_memory = DaskConvolve2d.time_in_memory
    track_speedup_dask_image = DaskConvolve2d.track_speedup_dask_image
    track_ratio_in_memory = DaskConvolve2d.track_ratio_in_memory


class DaskPredict(_OnCluster):
    """`predict` of the digits LeNet over IMAGES random 1x8x8 images in batches of BATCH."""

    def prepare(self):
        try:
            from fastconv.training import lenet
        except ImportError:
            skip("fastconv.training.lenet is not in this version")
        import dask.array as da

        import fastconv.dask as fd

        model = lenet(rng=0)
        images = self.client.persist(da.random.default_rng(2).random(
            (IMAGES, 1, 8, 8), dtype=np.float32, chunks=(BATCH, 1, 8, 8)))
        local = images.compute()

        def in_memory():
            for i in range(0, IMAGES, BATCH):
                model.forward(local[i:i + BATCH], training=False)

        self.impls["fastconv"] = self.on_cluster(lambda: fd.predict(model, images))
        self.impls["in-memory"] = in_memory

    def time_fastconv(self):
        self.impls["fastconv"]()

    def time_in_memory(self):
        self.impls["in-memory"]()

    def track_ratio_in_memory(self):
        return 1 / self._ratio("in-memory")

    track_ratio_in_memory.unit = "x (fastconv.dask time / in-memory time)"
