"""The dialog state both process kinds hold: workers run it (``table.DialogTable``), the state
plane mirrors, snapshots, persists and serves it from the same records (``RECORD``), so the
record's fields, codec and validation live here once, below both: like ``conf`` and
``ingress.sip``, this package is imported by the processes' packages and imports none of them.
"""

# the compiled build (conf/compiled.py) is put in front of the import system here too: the
# state plane imports this package without ``workers`` or ``ingress``, and a test of the
# table must get the same build whatever was imported before it
from conf import compiled as _compiled

_compiled.install()
