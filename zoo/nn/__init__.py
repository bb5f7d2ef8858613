"""Model families. Importing this package registers every zoo module."""
from zoo.nn import common  # noqa: F401  (registers Conv, DWConv, Concat, Index)
from zoo.nn import yolov10  # noqa: F401
from zoo.nn import tiny_vit  # noqa: F401
from zoo.nn import mobilevit  # noqa: F401
from zoo.nn import classify  # noqa: F401
from zoo.nn import rtdetr  # noqa: F401
from zoo.nn import sam  # noqa: F401
