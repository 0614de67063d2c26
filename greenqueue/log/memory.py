"""A log that keeps everything in dicts: no persistence, for tests and throwaway work.

It implements the whole contract (pending, dead set, crash-counted ``begin``) so the runtime
behaves the same on it as on the disk log; only a process exit forgets it all.
"""
from . import DeadTask, Log


class MemoryLog(Log):
    def __init__(self):
        self._pending = {}
        self._dead = {}

    def append(self, env):
        self._pending[env.id] = env
        self._dead.pop(env.id, None)

    def begin(self, envs):
        pass  # a crash takes the memory with it: nothing to count

    def remove(self, task_id):
        self._pending.pop(task_id, None)
        self._dead.pop(task_id, None)

    def bury(self, env, error):
        self._pending.pop(env.id, None)
        self._dead[env.id] = DeadTask(env, error)

    def pending(self):
        return list(self._pending.values())

    def dead(self):
        return list(self._dead.values())

    def describe(self):
        return "memory (not persistent)"
