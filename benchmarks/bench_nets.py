"""Whole networks: ResNet-18 and VGG-16 eval forwards and a ResNet-18 training step
(forward, softmax cross-entropy, backward) from `fastconv.nn.models`, against the
same networks in torch holding the same weights (float32).

Commits without `fastconv.nn.models` skip these; the torch twin is built from the
fastconv model by `fastconv._bench_nets.torch_twin`.
"""
import numpy as np

from .common import _OpBenchmark, interleaved_medians, random_array, skip

NET_CASES = {  # name: (builder, batch, image side, training step)
    "resnet18-b1": ("resnet18", 1, 224, False),
    "resnet18-b8": ("resnet18", 8, 224, False),
    "vgg16-b1": ("vgg16", 1, 224, False),
    "resnet18-train-b32": ("resnet18", 32, 64, True),
}


class Nets(_OpBenchmark):
    params = [list(NET_CASES), ["float32"], [2]]
    param_names = ["case", "dtype", "threads"]
    timeout = 900

    def prepare(self, case, dtype, threads):
        try:
            from fastconv import _bench_nets
            from fastconv.nn import models, softmax_cross_entropy
        except ImportError:
            skip("fastconv.nn.models is not in this version")
        name, batch, side, training = NET_CASES[case]
        classes = 10 if training else 1000
        model = getattr(models, name)(num_classes=classes, rng=0)
        x = random_array((batch, 3, side, side), dtype)
        labels = np.random.default_rng(1).integers(0, classes, batch)
        # a training step: the forward's products, then grad_x's and grad_w's
        self.flops = _bench_nets.model_flops(model, x.shape) * (3 if training else 1)
        twin = None if self.torch is None else _bench_nets.torch_twin(self.torch, model)
        if training:
            def step():
                _, grad = softmax_cross_entropy(model.forward(x, training=True), labels)
                model.backward(grad, input_grad=False)

            self.impls["fastconv"] = step
            if twin is not None:
                torch, tx, tl = self.torch, self.torch.from_numpy(x), self.torch.from_numpy(labels)

                def torch_step():
                    twin.train()
                    for p in twin.parameters():
                        p.grad = None
                    torch.nn.functional.cross_entropy(twin(tx), tl).backward()

                self.impls["torch"] = torch_step
        else:
            self.impls["fastconv"] = lambda: model.forward(x, training=False)
            if twin is not None:
                torch, tx = self.torch, self.torch.from_numpy(x)
                twin.eval()

                def torch_eval():
                    with torch.no_grad():
                        twin(tx)

                self.impls["torch"] = torch_eval

    def _gflops(self, name):
        return self.flops / interleaved_medians({name: self._impl(name)}, self.speedup_repeats)[name] / 1e9

    def track_gflops_fastconv(self, *params):
        return self._gflops("fastconv")

    track_gflops_fastconv.unit = "GFLOP/s (convolution and linear multiply-adds x 2 / median time)"

    def track_gflops_torch(self, *params):
        return self._gflops("torch")

    track_gflops_torch.unit = "GFLOP/s (convolution and linear multiply-adds x 2 / median time)"
