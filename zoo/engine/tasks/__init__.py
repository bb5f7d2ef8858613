"""Per-task training pieces (data, loss, validation, plots); see :mod:`zoo.engine.tasks.base`."""
from zoo.engine.tasks.base import TASKS, BaseTask, Task, register_task, task_for
from zoo.engine.tasks import classify as _classify  # noqa: F401  (registers "classify")
from zoo.engine.tasks import detect as _detect  # noqa: F401  (registers "detect")
from zoo.engine.tasks.detect import DETECT_HEADS, DetectHead, register_detect_head

__all__ = ["TASKS", "BaseTask", "Task", "register_task", "task_for", "DETECT_HEADS", "DetectHead",
           "register_detect_head"]
from zoo.engine.tasks import rtdetr as _rtdetr  # noqa: F401,E402  (registers the RTDETRDecoder detect head)
from zoo.engine.tasks import sam as _sam  # noqa: F401,E402  (registers "segment" for the SAM head)
