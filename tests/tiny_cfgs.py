"""Tiny model configs shared by the tests (a plain module: conftest names collide across folders)."""

TINY_DETECT = """\
# A five-row backbone and the YOLOv10 head: enough to exercise the whole detection pipeline fast.
nc: 5
backbone:
  - [-1, 1, Conv, [8, 3, 2]]    # 0  /2
  - [-1, 1, Conv, [16, 3, 2]]   # 1  /4
  - [-1, 1, Conv, [16, 3, 2]]   # 2  /8
  - [-1, 1, Conv, [24, 3, 2]]   # 3  /16
  - [-1, 1, Conv, [32, 3, 2]]   # 4  /32
head:
  - [[2, 3, 4], 1, v10Detect, [nc]]
"""

TINY_CLASSIFY = """\
nc: 5
backbone:
  - [-1, 1, Conv, [8, 3, 2]]
  - [-1, 1, Conv, [16, 3, 2]]
head:
  - [-1, 1, ClassifierHead, [nc]]
"""

# a small RT-DETR (its decoder at width 32) and a 4-class classifier, for predict / inference tests
TINY_RTDETR = """\
nc: 3
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
head:
  - [[2, 3, 4], 1, RTDETRDecoder, [nc, 32, 20, 2, 2, 2, 64, 0.0, None, -1, 0]]
"""

TINY_CLASSIFIER = """\
nc: 4
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
head:
  - [-1, 1, ClassifierHead, [nc]]
"""

# a stride-16 stand-in encoder and a narrow SAM head: the SAM task code runs in full, fast
TINY_SAM = """
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
head:
  - [-1, 1, SamNeck, [32]]
  - [-1, 1, SamHead, [1, 2, 64, 2, 3, 4, 2, 32]]
"""
