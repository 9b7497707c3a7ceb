# the compiled build of the hot modules, if built and up to date (conf/compiled.py), is put
# in front of the import system here: every process imports conf before anything else of the
# project, so before any module the build replaces (conf.pipe and conf.envelope among them)
from conf import compiled as _compiled

_compiled.install()
