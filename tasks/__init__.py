"""The task heads. Importing this package registers each head's builder with ``multitask.task``
(``multitask.task.build_task`` imports it when first asked for a task)."""
from tasks import caption, multi, qa, retrieval  # noqa: F401
