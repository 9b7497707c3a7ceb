# the compiled build of the hot modules, if built and up to date (conf/compiled.py), is put
# in front of the import system here, before any module it replaces can be imported
from conf import compiled as _compiled

_compiled.install()
