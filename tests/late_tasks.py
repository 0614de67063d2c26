"""A task module that no test imports: the runtime must import it to find the task."""
import greenqueue

ran = []


@greenqueue.task
def imported_on_demand(value):
    ran.append(value)
