"""``python -m greenqueue``: the same as ``bin/greenqueue``.

Patching happens first thing here; runpy has imported the ``greenqueue`` package just before,
which is harmless because importing it patches, opens and starts nothing (only the user's app
must not be imported before the patch, and it is imported later by ``run``).
"""
from gevent import monkey

monkey.patch_all()

from greenqueue.cli import main  # noqa: E402

main()
