"""The model zoo: torchvision's architectures (and LeNet-5) built from `fastconv.nn` layers.

Each builder takes ``(num_classes=..., *, dtype=np.float32, rng=None)`` and
returns a `Sequential` whose ``state_dict()`` has torchvision's keys in
torchvision's order, so trained weights load with
``model.load_state_dict(torch_model.state_dict())``. Fresh weights are
He-uniform (biases zero, batch norm scale one and shift zero), drawn from `rng`
(a seed or a ``numpy.random.Generator``), one generator for the whole model.

==============  ==========================  ============
builder         input (C, H, W)             parameters
==============  ==========================  ============
`lenet5`        (1, 28, 28)                 61,706
`alexnet`       (3, 224, 224); >= 63 x 63   61,100,840
`vgg11`         (3, 224, 224); >= 32 x 32   132,863,336
`vgg16`         (3, 224, 224); >= 32 x 32   138,357,544
`vgg16_bn`      (3, 224, 224); >= 32 x 32   138,365,992
`resnet18`      (3, 224, 224); >= 32 x 32   11,689,512
`resnet34`      (3, 224, 224); >= 32 x 32   21,797,672
==============  ==========================  ============

(parameter counts with 1000 classes, 10 for LeNet-5; adaptive average pooling
makes the classifiers independent of the input size.)
"""
from fastconv.nn.models.classic import alexnet, lenet5
from fastconv.nn.models.resnet import resnet18, resnet34
from fastconv.nn.models.vgg import vgg11, vgg16, vgg16_bn

__all__ = ["lenet5", "alexnet", "vgg11", "vgg16", "vgg16_bn", "resnet18", "resnet34"]
