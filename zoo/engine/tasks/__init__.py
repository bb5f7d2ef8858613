"""Per-task training pieces (data, loss, validation, plots); see :mod:`zoo.engine.tasks.base`.

Nothing here registers anything: :data:`TASKS` and :data:`HEADS` import their members themselves
on first lookup.
"""
from zoo.engine.tasks.base import TASKS, BaseTask, Task, task_class
from zoo.engine.tasks.heads import HEADS, DetectHead

__all__ = ["TASKS", "BaseTask", "Task", "task_class", "HEADS", "DetectHead"]
