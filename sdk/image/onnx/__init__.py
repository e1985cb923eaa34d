"""A small ONNX reader and numpy runtime: just enough to run CenterFace without OpenCV.

``load(data)`` parses an ONNX model (protobuf wire format, read by hand: no ``onnx`` or
``protobuf`` package) and compiles it into a :class:`Network`; ``Network.run`` evaluates it in
float32 with numpy alone. Initializers may be FLOAT (``raw_data`` or ``float_data``) or
FLOAT16 (``raw_data`` or ``int32_data``); either way the network runs in float32.

The runtime knows the operators CenterFace uses and nothing else: ``Conv`` (dense, grouped,
depthwise), ``ConvTranspose``, ``BatchNormalization`` (inference form), ``Relu``,
``Sigmoid``, ``Add`` and ``Cast`` (to FLOAT or FLOAT16, computed in float32). Tensors are
4-D with a batch of one. Anything else (another operator, an attribute it does not know, an
attribute value it does not support, external data, a tensor larger than its data) raises
:class:`OnnxError` at load time: nothing is skipped or guessed.

How it runs: activations are kept channels-last (H x W x C, which makes every 1x1
convolution a single matrix product and lets per-channel weights broadcast along the
contiguous axis). At load time each BatchNormalization that follows a convolution is folded
into its weights, and ReLU, Sigmoid and Add are fused into the convolution before them. A
run of convolutions whose intermediate results feed only the next one (MobileNetV2's
expand / depthwise / project blocks) is evaluated in bands of rows: each stage computes
just the rows the next one asks for and keeps the few rows that overlap with the next
band, so the wide intermediate tensors never exist in full and the work stays in the CPU
cache. 1x1 convolutions are one BLAS matrix product per band, k x k convolutions an
im2col copy plus one product, depthwise ones a multiply-accumulate of shifted views of the
band with per-channel weights (one ``einsum``), and a ConvTranspose one product followed by a
strided scatter of the taps. The bands of a chain are shared out among a few threads
(numpy and BLAS release the GIL), and while a network runs OpenBLAS is kept single-threaded
so that its threads do not fight these (see ``_threads._BlasThreads``).

A :class:`Network` holds read-only weights (and a few tiles of them it builds once): one
instance may run on several threads at once.

The modules (``_layers`` imports ``_proto``; ``_network`` imports the other three):

* ``_proto``: the protobuf wire format, the parsed model (:class:`Graph`), :func:`parse`,
  :func:`float16_model`, :class:`OnnxError`;
* ``_layers``: the operators checked, and the layers they compile into (convolution stages,
  ConvTranspose) with their arithmetic;
* ``_threads``: the threads a run shares its bands with, and OpenBLAS kept single-threaded;
* ``_network``: :class:`Network` (compiling the graph, running it in bands) and :func:`load`.
"""

from __future__ import annotations

from veilpix.image.onnx._network import Network, load
from veilpix.image.onnx._proto import FLOAT16, Graph, OnnxError, float16_model, parse

__all__ = ["FLOAT16", "Graph", "Network", "OnnxError", "float16_model", "load", "parse"]
